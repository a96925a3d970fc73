package binding

import "testing"

func TestBenignWarnings(t *testing.T) {
	for line, want := range map[string]bool{
		"load: special_eos_id is not in special_eog_ids - the tokenizer config may be incorrect":                     true,
		"llama_context: n_ctx_seq (512) < n_ctx_train (8192) -- the full capacity of the model will not be utilized": true,
		"llama_model_load: error loading model: tensor 'output.weight' data is not within the file bounds":           false,
		"llama_context: n_ctx_seq (16384) > n_ctx_train (8192) -- possible training context overflow":                false,
	} {
		if got := isBenign(line); got != want {
			t.Errorf("isBenign(%q) = %v, want %v", line, got, want)
		}
	}
}
