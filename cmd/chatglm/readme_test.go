package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
)

// TestREADMEDocumentsEveryCommand keeps README.md true: every command,
// flag and config key the program has must appear in it.
func TestREADMEDocumentsEveryCommand(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(shareddata.Root(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	cfg := config.New()
	root := newRoot(cfg)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c != root && !strings.Contains(readme, c.CommandPath()) {
			t.Errorf("README does not mention the command %q", c.CommandPath())
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden || f.Name == "help" {
				return
			}
			if !strings.Contains(readme, "--"+f.Name) {
				t.Errorf("README does not mention %s's flag --%s", c.CommandPath(), f.Name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	for _, k := range cfg.Keys() {
		if !strings.Contains(readme, "`"+k.Name+"`") {
			t.Errorf("README does not document the config key `%s`", k.Name)
		}
	}
}
