package gen

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestPromptTooLongMessage(t *testing.T) {
	for _, c := range []struct {
		err  PromptTooLongError
		want string
	}{
		{PromptTooLongError{PromptTokens: 9000, Limit: 8192}, "the prompt has 9000 tokens"},
		{PromptTooLongError{PromptTokens: 100, MaxTokens: 8192, Limit: 8192}, "you requested 8292 tokens (100 in the prompt, 8192 for the completion)"},
		// A client's max_tokens near MaxInt saturates instead of wrapping.
		{PromptTooLongError{PromptTokens: 9, MaxTokens: math.MaxInt, Limit: 512}, "you requested " + strconv.Itoa(math.MaxInt) + " tokens"},
	} {
		if got := c.err.Error(); !strings.Contains(got, c.want) || !strings.Contains(got, "maximum context length is") {
			t.Errorf("%+v: %q, want it to contain %q", c.err, got, c.want)
		}
	}
}
