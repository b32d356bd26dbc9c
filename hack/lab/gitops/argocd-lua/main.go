// Command argocd-lua runs Argo CD resource customizations (health checks and
// resource actions, laid out as Argo CD's own resource_customizations/
// <group>/<Kind>/) with the Lua 5.1 interpreter Argo CD embeds
// (github.com/yuin/gopher-lua), in the sandbox Argo CD gives scripts from
// argocd-cm: only the base, package and table libraries and a safe os
// (time, date). No string or math library, so a script that passes here
// also runs from argocd-cm without useOpenLibs.
//
//	argocd-lua test DIR               run every health_test.yaml and action_test.yaml under DIR
//	argocd-lua health DIR             JSON objects on stdin; one JSON line of health per object
//	argocd-lua discover DIR           one JSON object on stdin; the actions it offers
//	argocd-lua action DIR NAME        one JSON object on stdin; the object the action returns
//
// `test` runs with the clock at ARGOCD_LUA_NOW=1800000000 unless it is set.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

type health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

type action struct {
	Name     string `json:"name"`
	Disabled bool   `json:"disabled,omitempty"`
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: argocd-lua test|health|discover|action DIR [ACTION]")
	}
	dir := os.Args[2]
	switch os.Args[1] {
	case "test":
		if os.Getenv("ARGOCD_LUA_NOW") == "" {
			must(os.Setenv("ARGOCD_LUA_NOW", "1800000000"))
		}
		if n := runTests(dir); n > 0 {
			fail(fmt.Sprintf("%d test(s) failed", n))
		}
	case "health":
		in := json.NewDecoder(os.Stdin)
		out := json.NewEncoder(os.Stdout)
		for {
			var obj map[string]any
			if err := in.Decode(&obj); errors.Is(err, io.EOF) {
				return
			} else if err != nil {
				fail(err.Error())
			}
			h, err := healthOf(dir, obj)
			if err != nil {
				fail(err.Error())
			}
			must(out.Encode(h))
		}
	case "discover":
		obj := readOne()
		acts, err := discover(dir, obj)
		if err != nil {
			fail(err.Error())
		}
		must(json.NewEncoder(os.Stdout).Encode(acts))
	case "action":
		if len(os.Args) < 4 {
			fail("usage: argocd-lua action DIR NAME")
		}
		obj := readOne()
		res, err := runAction(dir, os.Args[3], obj)
		if err != nil {
			fail(err.Error())
		}
		must(json.NewEncoder(os.Stdout).Encode(res))
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "argocd-lua:", msg)
	os.Exit(1)
}

func must(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func readOne() map[string]any {
	var obj map[string]any
	must(json.NewDecoder(os.Stdin).Decode(&obj))
	return obj
}

// kindDir is where Argo CD looks for an object's scripts: <group>/<Kind>.
func kindDir(dir string, obj map[string]any) string {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	group := ""
	if i := strings.Index(apiVersion, "/"); i >= 0 {
		group = apiVersion[:i]
	}
	return filepath.Join(dir, group, kind)
}

// run executes a script with obj as the global `obj` and returns its value.
func run(script string, obj map[string]any) (lua.LValue, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.OsLibName, openSafeOs}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, openSafeOs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	return l.Get(-1), nil
}

func openSafeOs(l *lua.LState) int {
	mod := l.RegisterModule(lua.OsLibName, map[string]lua.LGFunction{
		"time": func(l *lua.LState) int { l.Push(lua.LNumber(now().Unix())); return 1 },
		"date": func(l *lua.LState) int {
			t := now().UTC()
			if l.GetTop() >= 2 {
				t = time.Unix(l.CheckInt64(2), 0).UTC()
			}
			l.Push(lua.LString(t.Format("2006-01-02T15:04:05Z")))
			return 1
		},
	})
	l.Push(mod)
	return 1
}

// now is the clock scripts see: ARGOCD_LUA_NOW (Unix seconds) when set, so
// that action tests have a fixed answer.
func now() time.Time {
	if s := os.Getenv("ARGOCD_LUA_NOW"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err == nil {
			return time.Unix(sec, 0)
		}
	}
	return time.Now()
}

// runFile runs the script at path with obj as the global `obj`.
func runFile(path string, obj map[string]any) (lua.LValue, error) {
	script, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := run(string(script), obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func healthOf(dir string, obj map[string]any) (health, error) {
	path := filepath.Join(kindDir(dir, obj), "health.lua")
	v, err := runFile(path, obj)
	if err != nil {
		return health{}, err
	}
	var h health
	if err := fromLua(v, &h); err != nil {
		return health{}, fmt.Errorf("%s: %w", path, err)
	}
	switch h.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return h, nil
	}
	return health{}, fmt.Errorf("%s: invalid health status %q", path, h.Status)
}

func discover(dir string, obj map[string]any) ([]action, error) {
	path := filepath.Join(kindDir(dir, obj), "actions", "discovery.lua")
	v, err := runFile(path, obj)
	if err != nil {
		return nil, err
	}
	t, ok := v.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("%s: returned %s, not a table", path, v.Type())
	}
	acts := []action{}
	t.ForEach(func(k, val lua.LValue) {
		a := action{Name: k.String()}
		if vt, ok := val.(*lua.LTable); ok {
			a.Disabled = vt.RawGetString("disabled") == lua.LTrue
		}
		acts = append(acts, a)
	})
	sort.Slice(acts, func(i, j int) bool { return acts[i].Name < acts[j].Name })
	return acts, nil
}

func runAction(dir, name string, obj map[string]any) (map[string]any, error) {
	path := filepath.Join(kindDir(dir, obj), "actions", name, "action.lua")
	v, err := runFile(path, obj)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := fromLua(v, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// fromLua converts a Lua value to JSON and decodes it into out. A table
// with keys 1..n is an array; an empty table an object.
func fromLua(v lua.LValue, out any) error {
	b, err := json.Marshal(plain(v))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func plain(v lua.LValue) any {
	switch x := v.(type) {
	case lua.LBool:
		return bool(x)
	case lua.LNumber:
		return float64(x)
	case lua.LString:
		return string(x)
	case *lua.LTable:
		if n := x.MaxN(); n > 0 {
			arr := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				arr = append(arr, plain(x.RawGetInt(i)))
			}
			return arr
		}
		m := map[string]any{}
		x.ForEach(func(k, val lua.LValue) { m[k.String()] = plain(val) })
		return m
	}
	return nil
}

// ---------------------------------------------------------------- tests

type healthTests struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus health `json:"healthStatus"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string   `json:"inputPath"`
		Result    []action `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action             string `json:"action"`
		InputPath          string `json:"inputPath"`
		ExpectedOutputPath string `json:"expectedOutputPath"`
	} `json:"actionTests"`
}

func readYAML(path string, out any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, out)
}

// runTests runs every test under dir and returns how many failed. A kind
// directory with a script and no tests for it is a failure too.
func runTests(dir string) int {
	failed, passed := 0, 0
	report := func(name string, err error) {
		if err != nil {
			failed++
			fmt.Printf("FAIL %s: %v\n", name, err)
		} else {
			passed++
			fmt.Printf("ok   %s\n", name)
		}
	}
	// one runs a test on the object in file and reports it as name.
	one := func(name, file string, test func(obj map[string]any) error) {
		var obj map[string]any
		err := readYAML(file, &obj)
		if err == nil {
			err = test(obj)
		}
		report(name, err)
	}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		here, relDir := filepath.Dir(path), filepath.Dir(rel)
		switch d.Name() {
		case "health.lua":
			var ts healthTests
			if err := readYAML(filepath.Join(here, "health_test.yaml"), &ts); err != nil || len(ts.Tests) == 0 {
				report(rel, fmt.Errorf("no tests in health_test.yaml: %v", err))
				return nil
			}
			for _, t := range ts.Tests {
				one(filepath.Join(relDir, t.InputPath), filepath.Join(here, t.InputPath), func(obj map[string]any) error {
					got, err := healthOf(dir, obj)
					if err == nil && got != t.HealthStatus {
						err = fmt.Errorf("got %+v, want %+v", got, t.HealthStatus)
					}
					return err
				})
			}
		case "discovery.lua":
			var ts actionTests
			if err := readYAML(filepath.Join(here, "action_test.yaml"), &ts); err != nil || len(ts.DiscoveryTests) == 0 || len(ts.ActionTests) == 0 {
				report(rel, fmt.Errorf("no discovery or action tests in action_test.yaml: %v", err))
				return nil
			}
			for _, t := range ts.DiscoveryTests {
				one(filepath.Join(relDir, "discovery", t.InputPath), filepath.Join(here, t.InputPath), func(obj map[string]any) error {
					got, err := discover(dir, obj)
					if err == nil && !reflect.DeepEqual(got, t.Result) {
						err = fmt.Errorf("got %+v, want %+v", got, t.Result)
					}
					return err
				})
			}
			for _, t := range ts.ActionTests {
				one(filepath.Join(relDir, t.Action, t.InputPath), filepath.Join(here, t.InputPath), func(obj map[string]any) error {
					var want map[string]any
					if err := readYAML(filepath.Join(here, t.ExpectedOutputPath), &want); err != nil {
						return err
					}
					got, err := runAction(dir, t.Action, obj)
					if err != nil {
						return err
					}
					return sameJSON(got, want)
				})
			}
		}
		return nil
	})
	if err != nil {
		fmt.Println("FAIL", err)
		failed++
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if passed == 0 {
		failed++
	}
	return failed
}

func sameJSON(got, want map[string]any) error {
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	var gn, wn any
	_ = json.Unmarshal(g, &gn)
	_ = json.Unmarshal(w, &wn)
	if !reflect.DeepEqual(gn, wn) {
		return fmt.Errorf("got\n%s\nwant\n%s", g, w)
	}
	return nil
}
