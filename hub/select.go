package hub

import (
	"fmt"
	"path"
	"strings"
)

// supportFiles are the small top-level files a conversion may need.
var supportFiles = map[string]bool{
	"config.json":             true,
	"generation_config.json":  true,
	"tokenizer.model":         true,
	"tokenizer.json":          true,
	"tokenizer_config.json":   true,
	"special_tokens_map.json": true,
	"added_tokens.json":       true,
	"MODEL_LICENSE":           true,
	"LICENSE":                 true,
}

// Select picks the files the converter needs from a listing: config and
// tokenizer files, the safetensors shards with their index, or the PyTorch
// .bin shards with theirs when the repo has no safetensors. all keeps every
// file; include adds files whose path or base name matches one of the globs
// (path.Match syntax). The listing order is kept.
func Select(files []File, all bool, include []string) ([]File, error) {
	for _, g := range include {
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("--include %q: %w", g, err)
		}
	}
	hasST := false
	for _, f := range files {
		if !strings.Contains(f.Path, "/") && strings.HasSuffix(f.Path, ".safetensors") {
			hasST = true
		}
	}
	var out []File
	for _, f := range files {
		if all || wanted(f.Path, hasST) || matchAny(include, f.Path) {
			out = append(out, f)
		}
	}
	return out, nil
}

func wanted(p string, hasST bool) bool {
	if strings.Contains(p, "/") {
		return false
	}
	if supportFiles[p] {
		return true
	}
	if hasST {
		return strings.HasSuffix(p, ".safetensors") || p == "model.safetensors.index.json"
	}
	return (strings.HasPrefix(p, "pytorch_model") && strings.HasSuffix(p, ".bin")) || p == "pytorch_model.bin.index.json"
}

func matchAny(globs []string, p string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, p); ok {
			return true
		}
		if ok, _ := path.Match(g, path.Base(p)); ok {
			return true
		}
	}
	return false
}
