package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/internal/config"
)

func init() { register(newPullCmd) }

// Config keys of the download commands.
const (
	keyModelsDir   = "models.dir"
	keyEndpoint    = "hub.endpoint"
	keySource      = "hub.source"
	keyOffline     = "hub.offline"
	keyConnections = "hub.connections"
	keyMinRate     = "hub.min_rate"
	keyRevision    = "pull.revision"
	keyAll         = "pull.all"
	keyInclude     = "pull.include"
	keyQuiet       = "pull.quiet"
)

// declareStoreKey declares models.dir on a command's flags.
func declareStoreKey(cfg *config.Store, cmd *cobra.Command) {
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyModelsDir, Flag: "models-dir", Default: hub.DefaultDir(), Usage: "the local model store"})
}

// declarePullKeys declares the keys shared by pull and get.
func declarePullKeys(cfg *config.Store, cmd *cobra.Command) {
	declareStoreKey(cfg, cmd)
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyRevision, Flag: "revision", Default: "", Usage: "branch, tag or commit (default main; master on ModelScope)"},
		config.Key{Name: keySource, Flag: "source", Default: "huggingface", Usage: "where to download from: huggingface or modelscope"},
		config.Key{Name: keyEndpoint, Flag: "endpoint", Default: "", Usage: "API endpoint, e.g. https://hf-mirror.com (default $HF_ENDPOINT or https://huggingface.co)"},
		config.Key{Name: keyOffline, Flag: "offline", Default: false, Usage: "use only what the local store has"},
		config.Key{Name: keyConnections, Flag: "connections", Default: 8, Usage: "parallel download connections"},
		config.Key{Name: keyMinRate, Flag: "min-rate", Default: 1024, Usage: "bytes/s a download must average over each 30 s window, else it is dropped and retried"},
		config.Key{Name: keyAll, Flag: "all", Default: false, Usage: "download every file of the repo"},
		config.Key{Name: keyInclude, Flag: "include", Default: []string{}, Usage: "also download files matching these globs"},
		config.Key{Name: keyQuiet, Flag: "quiet", Short: "q", Default: false, Usage: "no progress output"},
	)
}

// pullOptions builds hub options from the config; the token comes from
// HF_TOKEN (never from a flag, so it stays out of shell history and logs).
func pullOptions(cfg *config.Store, repo string, stderr io.Writer) hub.Options {
	o := hub.Options{
		Repo:        repo,
		Revision:    cfg.String(keyRevision),
		Source:      cfg.String(keySource),
		Endpoint:    cfg.String(keyEndpoint),
		Dir:         cfg.String(keyModelsDir),
		All:         cfg.Bool(keyAll),
		Include:     cfg.Strings(keyInclude),
		Offline:     cfg.Bool(keyOffline) || os.Getenv("HF_HUB_OFFLINE") == "1",
		Connections: cfg.Int(keyConnections),
		MinRate:     int64(cfg.Int(keyMinRate)),
		Progress:    hub.NoProgress{},
	}
	if !cfg.Bool(keyQuiet) {
		o.Progress = hub.NewBarProgress(stderr, isTerminal(stderr), 5*time.Second)
	}
	return o
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newPullCmd builds `chatglm pull`.
func newPullCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pull <org/name>",
		Short: "Download a model repo (config, tokenizer, weights) into the local store, resumably and verified",
		Long: `Download the files the converter needs (config, tokenizer files, safetensors shards and
their index; PyTorch .bin shards only when there are no safetensors) from the Hugging Face
Hub, a mirror (--endpoint or HF_ENDPOINT) or ModelScope (--source modelscope). Downloads
run in parallel byte ranges, resume after an interruption, retry transient failures and
verify every file's sha256 before it enters the store. Set HF_TOKEN for gated repos; it is
sent to the endpoint host only.`,
		Example: "  chatglm pull THUDM/chatglm3-6b\n  chatglm pull ZhipuAI/chatglm3-6b --source modelscope\n  HF_ENDPOINT=https://hf-mirror.com chatglm pull THUDM/chatglm3-6b",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stage(cmd.ErrOrStderr(), cfg.Bool(keyQuiet), "pulling %s...", args[0])
			res, err := hub.Pull(cmd.Context(), pullOptions(cfg, args[0], cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if res.Offline && !cfg.Bool(keyQuiet) {
				fmt.Fprintf(cmd.ErrOrStderr(), "using the local copy of %s (offline)\n", res.Repo)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Dir)
			return nil
		},
	}
	declarePullKeys(cfg, cmd)
	return cmd
}
