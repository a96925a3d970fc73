// Package deploy holds chatglm's Kubernetes manifests (a kustomize base, a
// GPU overlay and an optional HPA component) and container recipes; this
// test checks them: every manifest decodes strictly into the Kubernetes API
// types (unknown fields are errors), every file is used by a kustomization,
// and the wiring holds: probe paths are the server's health routes, ports
// and names resolve, the ConfigMap's config file is accepted by `chatglm
// config` (which rejects unknown keys), the container arguments parse, and
// the termination grace period covers the drain and shutdown periods.
package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/chatglm/chatglm/internal/fixture/testbin"
	"github.com/chatglm/chatglm/server"
)

// kustomization is the part of kustomize's file format the manifests use;
// anything else in one is an error.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
}

// object is one manifest as generic JSON, with its file.
type object struct {
	file string
	doc  map[string]any
}

func (o object) key() string {
	meta, _ := o.doc["metadata"].(map[string]any)
	return fmt.Sprintf("%v/%v", o.doc["kind"], meta["name"])
}

// stack is what one kustomization renders: its objects after patches, and
// its image names.
type stack struct {
	objects map[string]object // by kind/name
	images  map[string]string // image name -> newName:newTag
}

// typed decodes every manifest kind the folder uses, strictly.
func typed(kind string) (any, error) {
	switch kind {
	case "Deployment":
		return &appsv1.Deployment{}, nil
	case "Service":
		return &corev1.Service{}, nil
	case "ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	}
	return nil, fmt.Errorf("kind %q is not one this test knows", kind)
}

// decodeStrict decodes a manifest into its API type; fields the type lacks
// are errors.
func decodeStrict(name string, data []byte) (any, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &meta); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	obj, err := typed(meta.Kind)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return obj, nil
}

// merge applies a patch the way a strategic merge patch does for what these
// manifests patch: maps merge key by key, lists of named objects (containers,
// volumes) merge by name, other values are replaced.
func merge(base, patch any) any {
	switch p := patch.(type) {
	case map[string]any:
		b, ok := base.(map[string]any)
		if !ok {
			return p
		}
		out := map[string]any{}
		for k, v := range b {
			out[k] = v
		}
		for k, v := range p {
			out[k] = merge(b[k], v)
		}
		return out
	case []any:
		b, ok := base.([]any)
		if !ok || !namedList(p) || !namedList(b) {
			return p
		}
		out := slices.Clone(b)
	next:
		for _, pv := range p {
			pm := pv.(map[string]any)
			for i, bv := range out {
				if bv.(map[string]any)["name"] == pm["name"] {
					out[i] = merge(bv, pm)
					continue next
				}
			}
			out = append(out, pm)
		}
		return out
	}
	return patch
}

func namedList(l []any) bool {
	for _, v := range l {
		m, ok := v.(map[string]any)
		if !ok || m["name"] == nil {
			return false
		}
	}
	return true
}

// load renders the kustomization in dir, recording every file it reads in
// used.
func load(t *testing.T, dir string, used map[string]bool) stack {
	t.Helper()
	kfile := filepath.Join(dir, "kustomization.yaml")
	data, err := os.ReadFile(kfile)
	if err != nil {
		t.Fatal(err)
	}
	used[kfile] = true
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s: %v", kfile, err)
	}
	st := stack{objects: map[string]object{}, images: map[string]string{}}
	add := func(from stack) {
		for key, o := range from.objects {
			if _, dup := st.objects[key]; dup {
				t.Errorf("%s: %s defined twice", kfile, key)
			}
			st.objects[key] = o
		}
		for n, img := range from.images {
			st.images[n] = img
		}
	}
	readObject := func(name string) object {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%s: %v", kfile, err)
		}
		used[name] = true
		if _, err := decodeStrict(name, data); err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return object{file: name, doc: doc}
	}
	for _, r := range append(slices.Clone(k.Resources), k.Components...) {
		p := filepath.Join(dir, r)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			add(load(t, p, used))
			continue
		}
		o := readObject(p)
		add(stack{objects: map[string]object{o.key(): o}})
	}
	for _, pt := range k.Patches {
		o := readObject(filepath.Join(dir, pt.Path))
		base, ok := st.objects[o.key()]
		if !ok {
			t.Fatalf("%s patches %s, which its resources lack", o.file, o.key())
		}
		merged := merge(base.doc, o.doc).(map[string]any)
		data, _ := json.Marshal(merged)
		if _, err := decodeStrict(o.file+" applied to "+base.file, data); err != nil {
			t.Fatal(err)
		}
		st.objects[o.key()] = object{file: o.file, doc: merged}
	}
	for _, img := range k.Images {
		st.images[img.Name] = img.NewName + ":" + img.NewTag
	}
	return st
}

// get decodes the rendered object kind/name into its API type.
func get[T any](t *testing.T, st stack, key string) *T {
	t.Helper()
	o, ok := st.objects[key]
	if !ok {
		t.Fatalf("no %s", key)
	}
	data, _ := json.Marshal(o.doc)
	v := new(T)
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return v
}

// chatglmConfig is the part of the config file the wiring depends on.
type chatglmConfig struct {
	Model  string
	Port   int
	Host   string
	Drain  time.Duration
	Grace  time.Duration
	Models string
}

func parseConfig(t *testing.T, name, text string) chatglmConfig {
	t.Helper()
	var c struct {
		Model  string `json:"model"`
		Models struct {
			Dir string `json:"dir"`
		} `json:"models"`
		Server struct {
			Host            string `json:"host"`
			Port            int    `json:"port"`
			Drain           string `json:"drain"`
			ShutdownTimeout string `json:"shutdown_timeout"`
		} `json:"server"`
	}
	if err := yaml.Unmarshal([]byte(text), &c); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	dur := func(field, s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s: server.%s %q: %v", name, field, s, err)
		}
		return d
	}
	return chatglmConfig{Model: c.Model, Models: c.Models.Dir, Host: c.Server.Host, Port: c.Server.Port,
		Drain: dur("drain", c.Server.Drain), Grace: dur("shutdown_timeout", c.Server.ShutdownTimeout)}
}

// run runs the chatglm binary and returns its output.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(testbin.Path(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("chatglm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// metricsText is what /metrics of a server with no model shows (every
// metric name is present).
func metricsText(t *testing.T) string {
	t.Helper()
	s := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// TestEveryFileUsed: every YAML file under deploy/ belongs to a
// kustomization (so the strict decoding below saw it).
func TestEveryFileUsed(t *testing.T) {
	used := map[string]bool{}
	for _, dir := range []string{"base", "overlays/gpu", "components/hpa"} {
		load(t, dir, used)
	}
	filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if ext := path.Ext(p); (ext == ".yaml" || ext == ".yml") && !used[p] {
			t.Errorf("%s is in no kustomization", p)
		}
		return nil
	})
}

func TestBase(t *testing.T) { checkStack(t, load(t, "base", map[string]bool{}), false) }

func TestGPUOverlay(t *testing.T) {
	st := load(t, "overlays/gpu", map[string]bool{})
	checkStack(t, st, true)
	d := get[appsv1.Deployment](t, st, "Deployment/chatglm")
	gpu := d.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]
	if gpu.Value() < 1 {
		t.Error("the GPU overlay's container has no nvidia.com/gpu limit")
	}
	if !strings.HasSuffix(st.images["chatglm"], ":cuda") {
		t.Errorf("the GPU overlay runs image %q, not the CUDA one", st.images["chatglm"])
	}
}

// TestHPAComponent: the autoscaler scales the Deployment on a metric the
// server exports.
func TestHPAComponent(t *testing.T) {
	st := load(t, "components/hpa", map[string]bool{})
	hpa := get[autoscalingv2.HorizontalPodAutoscaler](t, st, "HorizontalPodAutoscaler/chatglm")
	base := load(t, "base", map[string]bool{})
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || base.objects["Deployment/"+ref.Name].doc == nil {
		t.Errorf("HPA targets %s/%s, which the base lacks", ref.Kind, ref.Name)
	}
	metrics := metricsText(t)
	for _, m := range hpa.Spec.Metrics {
		if m.Pods == nil {
			t.Errorf("HPA metric %+v: only per-pod metrics from /metrics are wired", m)
			continue
		}
		if !strings.Contains(metrics, "\n"+m.Pods.Metric.Name+" ") {
			t.Errorf("HPA metric %q is not in the server's /metrics", m.Pods.Metric.Name)
		}
	}
}

// checkStack checks the wiring of one rendered kustomization.
func checkStack(t *testing.T, st stack, gpu bool) {
	d := get[appsv1.Deployment](t, st, "Deployment/chatglm")
	svc := get[corev1.Service](t, st, "Service/chatglm")
	cm := get[corev1.ConfigMap](t, st, "ConfigMap/chatglm-config")
	pvcs := map[string]bool{}
	for key := range st.objects {
		if name, ok := strings.CutPrefix(key, "PersistentVolumeClaim/"); ok {
			pvcs[name] = true
		}
	}
	pod := d.Spec.Template.Spec

	// Labels: the Deployment's selector and the Service's select its pods.
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Deployment selector %s=%s does not match its pod labels", k, v)
		}
	}
	if len(svc.Spec.Selector) == 0 {
		t.Error("the Service selects nothing")
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod labels", k, v)
		}
	}

	// Volumes: every mount has a volume; they name the ConfigMap and PVC.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
		if v.ConfigMap != nil && v.ConfigMap.Name != cm.Name {
			t.Errorf("volume %s names ConfigMap %s, not %s", v.Name, v.ConfigMap.Name, cm.Name)
		}
		if v.PersistentVolumeClaim != nil && !pvcs[v.PersistentVolumeClaim.ClaimName] {
			t.Errorf("volume %s names PVC %s, which is not defined", v.Name, v.PersistentVolumeClaim.ClaimName)
		}
	}

	// The config file: chatglm accepts every key (unknown keys are an
	// error naming the file), and its values agree with the manifests.
	text, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatal("the ConfigMap has no config.yaml")
	}
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	listing := run(t, "--config", cfgFile, "config")
	cfg := parseConfig(t, "ConfigMap config.yaml", text)
	for _, key := range []string{"server.drain", "server.shutdown_timeout", "server.port", "server.host", "models.dir"} {
		if !strings.Contains(listing, "\n"+key+" ") {
			t.Errorf("`chatglm config` does not list %s", key)
		}
	}
	if cfg.Host != "0.0.0.0" {
		t.Errorf("server.host %q: probes and the Service cannot reach a server bound to it", cfg.Host)
	}

	containers := append(slices.Clone(pod.InitContainers), pod.Containers...)
	var serving *corev1.Container
	for i, c := range containers {
		if _, ok := st.images[c.Image]; !ok {
			t.Errorf("container %s: image %q is not renamed by the kustomization's images", c.Name, c.Image)
		}
		// Arguments: --config names the mounted file; the command and its
		// flags parse (`--help` fails on an unknown flag or command).
		args := slices.Clone(c.Args)
		at := slices.Index(args, "--config")
		if at < 0 || at+1 >= len(args) {
			t.Errorf("container %s does not pass --config", c.Name)
			continue
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("container %s mounts %s, which is not a volume", c.Name, m.Name)
			}
			if vols[m.Name].ConfigMap != nil && args[at+1] == m.MountPath+"/config.yaml" {
				mounted = true
			}
			if vols[m.Name].PersistentVolumeClaim != nil && m.MountPath != cfg.Models {
				t.Errorf("container %s mounts the model store at %s, the config's models.dir is %s", c.Name, m.MountPath, cfg.Models)
			}
		}
		if !mounted {
			t.Errorf("container %s: --config %s is not the mounted ConfigMap's config.yaml", c.Name, args[at+1])
		}
		args[at+1] = cfgFile
		run(t, append(args, "--help")...)
		if slices.Contains(args, "get") && !slices.Contains(args, cfg.Model) {
			t.Errorf("init container %s gets %v, the config serves %s", c.Name, args, cfg.Model)
		}
		if slices.Contains(args, "serve") {
			serving = &containers[i]
		}
	}
	if serving == nil {
		t.Fatal("no container runs serve")
	}

	// Ports and probes.
	port := func(p intstr.IntOrString) int32 {
		if p.Type == intstr.Int {
			return p.IntVal
		}
		for _, cp := range serving.Ports {
			if cp.Name == p.StrVal {
				return cp.ContainerPort
			}
		}
		t.Errorf("port %q is not a port of container %s", p.StrVal, serving.Name)
		return 0
	}
	if len(serving.Ports) != 1 || int(serving.Ports[0].ContainerPort) != cfg.Port {
		t.Errorf("container ports %+v, server.port %d", serving.Ports, cfg.Port)
	}
	for _, sp := range svc.Spec.Ports {
		if int(port(sp.TargetPort)) != cfg.Port {
			t.Errorf("Service port %s targets %v, server.port is %d", sp.Name, sp.TargetPort, cfg.Port)
		}
	}
	srv := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	probe := func(what string, p *corev1.Probe, want string, wantCode int) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", what)
			return
		}
		if p.HTTPGet.Path != want {
			t.Errorf("%s probe on %s, want %s", what, p.HTTPGet.Path, want)
		}
		if int(port(p.HTTPGet.Port)) != cfg.Port {
			t.Errorf("%s probe on port %v, server.port is %d", what, p.HTTPGet.Port, cfg.Port)
		}
		// The route exists in the server (a loading server: live, not ready).
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.HTTPGet.Path, nil))
		if rec.Code != wantCode {
			t.Errorf("%s probe path %s answers %d on a loading server, want %d", what, p.HTTPGet.Path, rec.Code, wantCode)
		}
	}
	probe("readiness", serving.ReadinessProbe, server.PathReady, http.StatusServiceUnavailable)
	probe("liveness", serving.LivenessProbe, server.PathLive, http.StatusOK)
	if a := d.Spec.Template.Annotations; a["prometheus.io/path"] != "/metrics" || a["prometheus.io/port"] != fmt.Sprint(cfg.Port) {
		t.Errorf("Prometheus annotations %v: want /metrics on %d", a, cfg.Port)
	}

	// Shutdown: the grace period covers the drain and the in-flight
	// requests' shutdown timeout; the drain outlasts the readiness probe's
	// detection.
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace < cfg.Drain+cfg.Grace {
		t.Errorf("terminationGracePeriodSeconds %v < server.drain %v + server.shutdown_timeout %v", grace, cfg.Drain, cfg.Grace)
	}
	rp := serving.ReadinessProbe
	if detect := time.Duration(rp.PeriodSeconds*max(rp.FailureThreshold, 1)) * time.Second; cfg.Drain < detect {
		t.Errorf("server.drain %v is shorter than the readiness probe needs to see it (%v)", cfg.Drain, detect)
	}
	if gpu && !strings.Contains(text, "layers: -1") {
		t.Error("the GPU config does not offload every layer (gpu.layers: -1)")
	}
}

// TestStrictDecodingRejects: the decoder this test relies on fails on a
// field the API type lacks and on a misplaced one.
func TestStrictDecodingRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 3\n",
		"misplaced":     "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  containerPort: 80\n",
		"unknown kind":  "apiVersion: v1\nkind: Pod2\nmetadata:\n  name: x\n",
	} {
		if _, err := decodeStrict(name, []byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}
