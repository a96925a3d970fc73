package chat

import "github.com/chatglm/chatglm/gen"

// DefaultSampling is ChatGLM3's chat() default: temperature 0.8, top_p 0.8,
// plus what HF transformers adds to a config without generation_config.json:
// top_k 50 and no repetition penalty. (chatglm's commands default to the
// seed recipe's temperature 0.7 through their config keys.)
func DefaultSampling() gen.Sampling {
	return gen.Sampling{Temperature: 0.8, TopP: 0.8, TopK: 50, RepeatPenalty: 1, RepeatLastN: 64}
}

// Model is what a conversation needs from the loaded model besides a
// generator (a gen.Generator, such as an engine slot): its tokenizer and the
// number of tokens one sequence holds.
type Model interface {
	Tokenizer
	ContextSize() int
}
