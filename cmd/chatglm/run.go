package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/chat/backend"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/internal/config"
)

func init() { register(newRunCmd) }

const runLong = `Answer one prompt and exit. The prompt is -p TEXT, or stdin when -p is not
given. The reply streams to stdout; with --json one JSON object is printed at
the end instead: the reply (or the tool call), token counts and timings.

--messages FILE continues a conversation: a JSON list of
{role, content, metadata, tools}, the shape /save in ` + "`chatglm chat`" + ` writes. The
prompt is added as a user message; without a prompt the file's last message
(a user or observation message) is the one answered.

--dry-run prints, as JSON, the prompt token ids that would be evaluated, and
generates nothing (it reads only the tokenizer from the GGUF file).`

type runFlags struct {
	prompt, system, messages string
	jsonOut, dryRun, verbose bool
}

// newRunCmd builds `chatglm run`.
func newRunCmd(cfg *config.Store) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run -m MODEL [-p PROMPT]",
		Short: "Answer one prompt (from -p or stdin) and exit",
		Long:  runLong,
		Example: `  chatglm run -m THUDM/chatglm3-6b -p "你好"
  echo "Summarise: ..." | chatglm run -m model.gguf --json
  chatglm run -m model.gguf --messages conversation.json -p "and then?"
  chatglm run -m model.gguf -p "你好" --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRun(cmd, cfg, f)
		},
	}
	declareModelKeys(cfg, cmd)
	declareSamplingKeys(cfg, cmd)
	fl := cmd.Flags()
	fl.StringVarP(&f.prompt, "prompt", "p", "", "the prompt (default: read stdin)")
	fl.StringVar(&f.system, "system", "", "system prompt")
	fl.StringVar(&f.messages, "messages", "", "JSON file with the conversation to continue")
	fl.BoolVar(&f.jsonOut, "json", false, "print one JSON object with the reply, token counts and timings")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the prompt token ids as JSON and generate nothing")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "print load time and prompt/generation speed to stderr")
	return cmd
}

// runInput is the conversation before the reply and the message answered.
func runInput(cmd *cobra.Command, f runFlags) ([]chat.Message, chat.Message, error) {
	var history []chat.Message
	if f.messages != "" {
		msgs, err := chat.LoadMessagesFile(f.messages)
		if err != nil {
			return nil, chat.Message{}, fmt.Errorf("--messages: %w", err)
		}
		history = msgs
	}
	prompt := f.prompt
	if !cmd.Flags().Changed("prompt") {
		in := cmd.InOrStdin()
		if !isTTY(in) || f.messages == "" {
			b, err := io.ReadAll(in)
			if err != nil {
				return nil, chat.Message{}, fmt.Errorf("read the prompt from stdin: %w", err)
			}
			prompt = strings.TrimRight(string(b), "\r\n")
		}
	}
	var q chat.Message
	switch {
	case strings.TrimSpace(prompt) != "":
		q = chat.Message{Role: chat.RoleUser, Content: prompt}
	case len(history) > 0 && (history[len(history)-1].Role == chat.RoleUser || history[len(history)-1].Role == chat.RoleObservation):
		q, history = history[len(history)-1], history[:len(history)-1]
	default:
		return nil, chat.Message{}, errors.New("no prompt: give -p TEXT, pipe it on stdin, or end --messages with a user or observation message")
	}
	if f.system != "" {
		if len(history) > 0 && history[0].Role == chat.RoleSystem {
			history[0].Content = f.system
		} else {
			history = append([]chat.Message{{Role: chat.RoleSystem, Content: f.system}}, history...)
		}
	}
	return history, q, nil
}

// runReport is what --json prints.
type runReport struct {
	Reply    string       `json:"reply"`
	ToolCall *runToolCall `json:"tool_call,omitempty"`
	Finish   string       `json:"finish_reason"`
	Dropped  int          `json:"dropped_messages,omitempty"`
	Usage    runUsage     `json:"usage"`
	Timings  runTimings   `json:"timings"`
	Model    string       `json:"model"`
	Messages int          `json:"history_messages"`
}

type runToolCall struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	Content   string          `json:"content"`
	Error     string          `json:"error,omitempty"`
}

type runUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CachedTokens     int `json:"cached_tokens"`
	EvaluatedTokens  int `json:"evaluated_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

type runTimings struct {
	LoadMS       float64 `json:"load_ms"`
	PromptMS     float64 `json:"prompt_ms"`
	GenerationMS float64 `json:"generation_ms"`
	PromptPerSec float64 `json:"prompt_tokens_per_second"`
	GenPerSec    float64 `json:"generation_tokens_per_second"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func perSec(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func runRun(cmd *cobra.Command, cfg *config.Store, f runFlags) error {
	sampling, maxTokens, err := samplingFromConfig(cfg)
	if err != nil {
		return err
	}
	history, q, err := runInput(cmd, f)
	if err != nil {
		return err
	}
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	opts := chat.Options{Sampling: sampling, MaxTokens: maxTokens}
	if f.dryRun {
		tok, path, err := openTokenizerOnly(cfg)
		if err != nil {
			return err
		}
		conv := chat.NewConversation(tok, nil, opts)
		if err := conv.SetMessages(history); err != nil {
			return fmt.Errorf("--messages: %w", err)
		}
		plan, err := conv.Plan(q)
		if err != nil {
			return err
		}
		return writeJSON(stdout, struct {
			Model   string  `json:"model"`
			Context int     `json:"context_size"`
			Tokens  int     `json:"prompt_tokens"`
			Dropped int     `json:"dropped_messages"`
			IDs     []int32 `json:"ids"`
		}{path, tok.ContextSize(), len(plan.IDs), plan.Dropped, plan.IDs})
	}

	ctx := cmd.Context()
	lm, err := openModel(ctx, cfg, 1, stderr, f.verbose)
	if err != nil {
		return err
	}
	defer lm.Close()
	conv, release, err := backend.NewConversation(ctx, lm.Engine, lm.Model, opts)
	if err != nil {
		return err
	}
	defer release()
	if err := conv.SetMessages(history); err != nil {
		return fmt.Errorf("--messages: %w", err)
	}
	var onText func(string) error
	if !f.jsonOut {
		onText = func(s string) error { _, err := io.WriteString(stdout, s); return err }
	}
	turn, err := conv.Send(ctx, q, onText)
	if err != nil {
		return err
	}
	res := turn.Result
	if turn.TrimNotice {
		fmt.Fprintf(stderr, "(dropped the %d oldest messages to fit the context of %d tokens)\n", turn.Dropped, lm.Engine.ContextSize())
	}
	if f.verbose {
		fmt.Fprintln(stderr, turnStats(res))
	}
	if !f.jsonOut {
		if tc := turn.Response.ToolCall; tc != nil {
			fmt.Fprintln(stdout, formatToolCall(tc))
		} else {
			fmt.Fprintln(stdout)
		}
		if res.Finish == gen.FinishCancelled {
			return exitError{code: 130}
		}
		return nil
	}
	rep := runReport{
		Reply: turn.Response.Content, Finish: res.Finish, Dropped: turn.Dropped, Model: lm.Path,
		Messages: len(conv.Messages()),
		Usage: runUsage{PromptTokens: res.PromptTokens, CachedTokens: res.CachedTokens,
			EvaluatedTokens: res.EvaluatedTokens, CompletionTokens: len(res.Tokens)},
		Timings: runTimings{LoadMS: ms(lm.LoadTime), PromptMS: ms(res.PromptTime), GenerationMS: ms(res.GenTime),
			PromptPerSec: perSec(res.EvaluatedTokens, res.PromptTime), GenPerSec: perSec(len(res.Tokens), res.GenTime)},
	}
	if tc := turn.Response.ToolCall; tc != nil {
		rep.ToolCall = &runToolCall{Name: tc.Name, Content: tc.Content}
		if tc.Err != nil {
			rep.ToolCall.Error = tc.Err.Error()
		} else if tc.Arguments != nil {
			args, err := tc.Arguments.MarshalJSON()
			if err != nil {
				rep.ToolCall.Error = err.Error()
			} else {
				rep.ToolCall.Arguments = args
			}
		}
	}
	if err := writeJSON(stdout, rep); err != nil {
		return err
	}
	if res.Finish == gen.FinishCancelled {
		return exitError{code: 130}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}
