package main

import (
	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/config"
)

func init() { register(newInfoCmd) }

// Config keys of the info command.
const (
	infoJSON  = "info.json"
	infoArray = "info.array_items"
)

// newInfoCmd builds `chatglm info <model.gguf>`.
func newInfoCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "info <model.gguf>",
		Short: "Show a GGUF file's metadata and tensor table",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := gguf.Open(args[0])
			if err != nil {
				return err
			}
			in := f.Describe(cfg.Int(infoArray))
			if cfg.Bool(infoJSON) {
				return in.WriteJSON(cmd.OutOrStdout())
			}
			return in.WriteText(cmd.OutOrStdout())
		},
	}
	cfg.Declare(cmd.Flags(),
		config.Key{Name: infoJSON, Flag: "json", Default: false, Usage: "print JSON"},
		config.Key{Name: infoArray, Flag: "array-items", Default: 8, Usage: "array elements shown per metadata array (-1 = all)"},
	)
	return cmd
}
