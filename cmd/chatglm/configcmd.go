package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/internal/config"
)

func init() { register(newConfigCmd) }

// newConfigCmd lists every config key with its flag, environment variable,
// default and effective value.
func newConfigCmd(cfg *config.Store) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "List every config key, its flag, env variable, default and current value",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "KEY\tFLAG\tENV\tDEFAULT\tVALUE")
			for _, k := range cfg.Keys() {
				flag := "-"
				if k.Flag != "" {
					flag = "--" + k.Flag
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%v\n", k.Name, flag, k.EnvVar(), k.Default, cfg.Value(k.Name))
			}
			if f := cfg.FileUsed(); f != "" {
				fmt.Fprintf(w, "\n(config file: %s)\n", f)
			}
			return w.Flush()
		},
	}
}
