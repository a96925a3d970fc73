package hub_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/hub/hubtest"
)

// TestPullShowsLargeFileBytes: a real pull of a file over hub.LargeFile
// shows a line of its own with its bytes done / total under the totals.
func TestPullShowsLargeFileBytes(t *testing.T) {
	big := make([]byte, hub.LargeFile+1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	srv := hubtest.New()
	t.Cleanup(srv.Close)
	if _, err := srv.SetRepo("org/big", map[string]*hubtest.File{
		"config.json":       {Data: []byte(`{"model_type": "chatglm"}`)},
		"model.safetensors": {Data: big, LFS: true},
	}); err != nil {
		t.Fatal(err)
	}
	srv.SetFault(func(hubtest.Request) hubtest.Fault { return hubtest.Fault{Throttle: 4 * time.Millisecond} })
	var out bytes.Buffer
	p := hub.NewBarProgress(&out, true, 0)
	if _, err := hub.Pull(context.Background(), hub.Options{Repo: "org/big", Endpoint: srv.URL(), Dir: t.TempDir(), Token: "-", Progress: p}); err != nil {
		t.Fatal(err)
	}
	frames := regexp.MustCompile(`\n  model\.safetensors  ([0-9.]+) / 17\.8 MB +[0-9]+%  [0-9.]+ [kM]?B/s`).FindAllStringSubmatch(out.String(), -1)
	moving := false
	for _, f := range frames {
		if v, _ := strconv.ParseFloat(f[1], 64); v > 0 {
			moving = true
		}
	}
	if !moving {
		t.Fatalf("no line with the large file's bytes in:\n%q", out.String())
	}
}
