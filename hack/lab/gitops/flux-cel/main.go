// Command flux-cel evaluates a Kustomization's healthCheckExprs for a kind
// with Flux's own evaluator (github.com/fluxcd/pkg/runtime/cel, what
// kustomize-controller runs): the expressions as flags, a stream of JSON
// objects on stdin, one JSON line per object on stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

func main() {
	var exprs kustomize.HealthCheckExpressions
	flag.StringVar(&exprs.Current, "current", "", "the current expression")
	flag.StringVar(&exprs.Failed, "failed", "", "the failed expression")
	flag.StringVar(&exprs.InProgress, "in-progress", "", "the inProgress expression")
	flag.Parse()
	eval, err := cel.NewStatusEvaluator(&exprs)
	if err != nil {
		fail(err)
	}
	in := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := in.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fail(err)
		}
		var obj map[string]any
		if err := utiljson.Unmarshal(raw, &obj); err != nil {
			fail(err)
		}
		res, err := eval.Evaluate(context.Background(), &unstructured.Unstructured{Object: obj})
		if err != nil {
			fail(err)
		}
		if err := out.Encode(map[string]string{"status": res.Status.String()}); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "flux-cel:", err)
	os.Exit(1)
}
