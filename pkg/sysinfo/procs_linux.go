package sysinfo

import (
	"context"
	"io"
	"os"

	"github.com/shirou/gopsutil/v4/common"
)

// Procs implements Sampler: the numeric entries of /proc, counted in
// batches without building the whole list of names.
func (s *System) Procs(context.Context) (int, error) {
	f, err := os.Open(s.hostPath(common.HostProcEnvKey, "/proc"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(256)
		for _, name := range names {
			if isDigits(name) {
				n++
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
