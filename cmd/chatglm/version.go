package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/third_party/llamacpp"
)

func init() { register(newVersionCmd) }

// version is the program version, set at link time with -X main.version=...
var version = "dev"

// newVersionCmd prints the version, the pinned llama.cpp, ggml's CPU
// features and the compute devices found.
func newVersionCmd(cfg *config.Store) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the llama.cpp pin, CPU features and devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "chatglm %s\n", version)
			fmt.Fprintf(out, "llama.cpp %s (via %s %s)\n", llamacpp.Base, llamacpp.Module, llamacpp.Version)
			fmt.Fprintf(out, "system: %s\n", binding.SystemInfo())
			build := binding.CPUBuildInfo()
			fmt.Fprintf(out, "cpu build: %s\n", build)
			if note := build.Note(); note != "" {
				fmt.Fprintln(out, "note:", note)
			}
			for _, d := range binding.Devices() {
				fmt.Fprintf(out, "device: %s (%s, %s) %s free of %s\n", d.Name, d.Type, d.Description, gib(d.FreeBytes), gib(d.TotalBytes))
			}
			if note := binding.GPUNote(); note != "" {
				fmt.Fprintln(out, "gpu:", note)
			}
			return nil
		},
	}
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
