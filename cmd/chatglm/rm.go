package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/internal/config"
)

func init() { register(newRmCmd) }

// newRmCmd builds `chatglm rm`.
func newRmCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rm <org/name>...",
		Short: "Remove models (every snapshot, converted GGUF and partial download) from the local store",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st := hub.NewStore(cfg.String(keyModelsDir))
			for _, repo := range args {
				if err := st.Remove(repo); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", repo)
			}
			return nil
		},
	}
	declareStoreKey(cfg, cmd)
	return cmd
}
