package main

import (
	"errors"
	"fmt"
	"io/fs"
)

// withForceHint adds the way out to an error saying that an output file
// exists: the libraries (convert, quantize) report the problem, the command
// knows its flag.
func withForceHint(err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w (use --force to overwrite)", err)
	}
	return err
}
