package sysinfo

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"

	"github.com/shirou/gopsutil/v4/common"
)

// Software implements Describer: dpkg's status file when there is one
// (read directly: no process to start), else `rpm -qa`.
func (s *System) Software(ctx context.Context) ([]Package, error) {
	f, err := os.Open(s.hostPath(common.HostVarEnvKey, "/var", "lib", "dpkg", "status"))
	if err == nil {
		defer f.Close()
		return parseDpkgStatus(f)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	rpm, err := exec.LookPath("rpm")
	if err != nil {
		return nil, errNoPackageDB
	}
	return runLister(ctx, parseNameVersionLines, rpm, "-qa", "--queryformat", `%{NAME}\t%{VERSION}-%{RELEASE}\n`)
}
