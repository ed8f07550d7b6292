//go:build windows

package update

import (
	"errors"
	"os"
)

// terminate: Windows has no graceful signal for another console process.
func terminate(int) error { return errors.ErrUnsupported }

func kill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	defer p.Release()
	return p.Kill()
}
