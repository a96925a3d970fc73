package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/internal/config"
)

func init() { register(newListCmd) }

// newListCmd builds `chatglm list`.
func newListCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the models in the local store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st := hub.NewStore(cfg.String(keyModelsDir))
			snaps, err := st.List()
			if err != nil {
				return err
			}
			if len(snaps) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no models in %s (try `chatglm get THUDM/chatglm3-6b`)\n", st.Dir)
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "REPO\tREVISION\tSNAPSHOT\tFILES\tSIZE\tGGUF\tPATH")
			for _, s := range snaps {
				revs := strings.Join(s.Revisions, ",")
				if revs == "" {
					revs = "-"
				}
				id := s.ID
				if len(id) > 12 {
					id = id[:12]
				}
				var ggufs []string
				for _, g := range s.GGUFs {
					ggufs = append(ggufs, filepath.Base(g))
				}
				gg := strings.Join(ggufs, ",")
				if gg == "" {
					gg = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Repo, revs, id, s.Files, humanBytes(s.Size), gg, s.Dir)
			}
			return w.Flush()
		},
	}
	declareStoreKey(cfg, cmd)
	return cmd
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
