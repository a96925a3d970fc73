// Command chatglm runs THUDM's ChatGLM3-6B locally: it downloads and converts
// the weights, chats in a terminal, answers one-shot prompts and serves an
// OpenAI-compatible API. Each subcommand lives in its own file and registers
// itself with register; this file wires the configuration and logging that
// every subcommand shares.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/internal/config"
)

// commandMakers are the subcommands, added by each command file's init.
var commandMakers []func(cfg *config.Store) *cobra.Command

// register adds a subcommand constructor.
func register(make func(cfg *config.Store) *cobra.Command) {
	commandMakers = append(commandMakers, make)
}

// newRoot builds the command tree over one configuration store.
func newRoot(cfg *config.Store) *cobra.Command {
	var configPath, logLevel string
	root := &cobra.Command{
		Use:           "chatglm",
		Short:         "Run ChatGLM3-6B locally: download, convert, chat and serve",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := setupLogging(logLevel); err != nil {
				return err
			}
			if err := cfg.Load(configPath); err != nil {
				return err
			}
			if f := cfg.FileUsed(); f != "" {
				slog.Debug("config file", "path", f)
			}
			return cfg.Bind(cmd.Flags())
		},
	}
	root.PersistentFlags().StringVar(&configPath, "config", "", "config file (default "+config.DefaultPath()+")")
	root.PersistentFlags().StringVar(&logLevel, "log-level", envOr("CHATGLM_LOG_LEVEL", "warn"), "log level: debug, info, warn, error (env CHATGLM_LOG_LEVEL)")
	for _, mk := range commandMakers {
		root.AddCommand(mk(cfg))
	}
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// setupLogging sends slog records to stderr at the given level.
func setupLogging(level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})))
	return nil
}

// exitError carries a process exit code out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(config.New())
	root.SetArgs(llamaServerArgs(os.Args[1:]))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "chatglm:", err)
	os.Exit(1)
}
