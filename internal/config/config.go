// Package config holds chatglm's configuration: every key a command declares,
// its default, and the precedence flags > environment (CHATGLM_*) > config
// file > defaults. Commands declare their keys once with Declare; the root
// command calls Load and Bind before a command runs, so a command only ever
// reads values.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix is the prefix of environment variables that set config keys:
// the key "gpu.layers" is read from CHATGLM_GPU_LAYERS.
const EnvPrefix = "CHATGLM"

// annotation marks a flag with the config key it sets.
const annotation = "chatglm/config-key"

// Key describes one configuration key and the flag that sets it.
type Key struct {
	Name    string // dotted config key, e.g. "gpu.layers"
	Flag    string // flag name, e.g. "gpu-layers"; empty for file/env-only keys
	Short   string // optional one-letter flag
	Default any    // string, int, float64, bool, time.Duration or []string
	Usage   string // one line for --help and the README
}

// EnvVar returns the environment variable that sets the key.
func (k Key) EnvVar() string { return EnvName(k.Name) }

// EnvName maps a dotted key to its environment variable.
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// Store is the configuration of one run of the program.
type Store struct {
	v        *viper.Viper
	keys     map[string]Key
	fileUsed string
}

// New returns an empty store that reads CHATGLM_* environment variables.
func New() *Store {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	return &Store{v: v, keys: map[string]Key{}}
}

// Declare registers keys, sets their defaults and defines their flags on fs.
// Declaring the same key from several commands is allowed; each command gets
// its own flag, and the flag of the command that runs is the one that counts.
func (s *Store) Declare(fs *pflag.FlagSet, keys ...Key) {
	for _, k := range keys {
		if !validKeyName(k.Name) {
			panic(fmt.Sprintf("config: key %q: spell keys in lower case with dots and underscores", k.Name))
		}
		s.keys[k.Name] = k
		s.v.SetDefault(k.Name, k.Default)
		if k.Flag == "" || fs == nil {
			continue
		}
		usage := fmt.Sprintf("%s (config %s, env %s)", k.Usage, k.Name, k.EnvVar())
		switch d := k.Default.(type) {
		case string:
			fs.StringP(k.Flag, k.Short, d, usage)
		case int:
			fs.IntP(k.Flag, k.Short, d, usage)
		case float64:
			fs.Float64P(k.Flag, k.Short, d, usage)
		case bool:
			fs.BoolP(k.Flag, k.Short, d, usage)
		case time.Duration:
			fs.DurationP(k.Flag, k.Short, d, usage)
		case []string:
			fs.StringSliceP(k.Flag, k.Short, d, usage)
		default:
			panic(fmt.Sprintf("config: key %s: unsupported default type %T", k.Name, k.Default))
		}
		_ = fs.SetAnnotation(k.Flag, annotation, []string{k.Name})
	}
}

// validKeyName accepts dotted lower-case keys with underscores
// ("server.read_timeout"): one spelling, so that the file, the environment
// and the README agree.
func validKeyName(name string) bool {
	if name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// DefaultPath is the config file read when --config is not given:
// $XDG_CONFIG_HOME/chatglm/config.yaml (~/.config/chatglm/config.yaml).
func DefaultPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "chatglm", "config.yaml")
}

// Load reads the config file at path. An empty path means DefaultPath, which
// may be absent; an explicit path must exist. The format follows the file
// extension (yaml, yml, json, toml).
func (s *Store) Load(path string) error {
	explicit := path != ""
	if !explicit {
		path = DefaultPath()
		if path == "" {
			return nil
		}
	}
	if _, err := os.Stat(path); err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	s.v.SetConfigFile(path)
	if err := s.v.ReadInConfig(); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for _, k := range s.v.AllKeys() {
		if _, ok := s.keys[k]; !ok && !s.isParent(k) {
			return fmt.Errorf("config file %s: unknown key %q (see `chatglm config keys`)", path, k)
		}
	}
	s.fileUsed = path
	return nil
}

func (s *Store) isParent(k string) bool {
	for name := range s.keys {
		if strings.HasPrefix(name, k+".") {
			return true
		}
	}
	return false
}

// FileUsed is the config file that Load read, or "" if none.
func (s *Store) FileUsed() string { return s.fileUsed }

// Bind makes the flags in fs (those made by Declare) override the config
// file and environment. Call it for the flags of the command that runs.
func (s *Store) Bind(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if keys := f.Annotations[annotation]; len(keys) == 1 && err == nil {
			err = s.v.BindPFlag(keys[0], f)
		}
	})
	return err
}

// String returns the value of a string key.
func (s *Store) String(key string) string { s.mustKnow(key); return s.v.GetString(key) }

// Int returns the value of an integer key.
func (s *Store) Int(key string) int { s.mustKnow(key); return s.v.GetInt(key) }

// Float returns the value of a float key.
func (s *Store) Float(key string) float64 { s.mustKnow(key); return s.v.GetFloat64(key) }

// Bool returns the value of a boolean key.
func (s *Store) Bool(key string) bool { s.mustKnow(key); return s.v.GetBool(key) }

// Duration returns the value of a duration key ("30s", "5m").
func (s *Store) Duration(key string) time.Duration { s.mustKnow(key); return s.v.GetDuration(key) }

// Strings returns the value of a list key.
func (s *Store) Strings(key string) []string { s.mustKnow(key); return s.v.GetStringSlice(key) }

// IsSet reports whether the key was given by a flag, the environment or the file.
func (s *Store) IsSet(key string) bool { s.mustKnow(key); return s.v.IsSet(key) }

func (s *Store) mustKnow(key string) {
	if _, ok := s.keys[key]; !ok {
		panic("config: undeclared key " + key)
	}
}

// Keys lists every declared key, sorted by name.
func (s *Store) Keys() []Key {
	out := make([]Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Value returns the effective value of a key, whatever its type.
func (s *Store) Value(key string) any { s.mustKnow(key); return s.v.Get(key) }
