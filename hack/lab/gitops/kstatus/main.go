// Command kstatus prints what the kstatus library (sigs.k8s.io/cli-utils,
// the code Flux and kpt use to decide whether an applied object is done)
// computes for each Kubernetes object it reads: a stream of JSON objects on
// stdin, one JSON line per object on stdout.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type line struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	in := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := in.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			fmt.Fprintln(os.Stderr, "kstatus: reading an object:", err)
			os.Exit(2)
		}
		// Integers as int64, as the API machinery decodes them.
		var obj map[string]any
		if err := utiljson.Unmarshal(raw, &obj); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: decoding an object:", err)
			os.Exit(2)
		}
		u := &unstructured.Unstructured{Object: obj}
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s %s: %v\n", u.GetKind(), u.GetName(), err)
			os.Exit(1)
		}
		if err := out.Encode(line{u.GetKind(), u.GetName(), res.Status.String(), res.Message}); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(2)
		}
	}
}
