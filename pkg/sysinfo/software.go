package sysinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// maxPackages bounds what a package listing reads, whatever the caller's
// cap: a corrupt or hostile database must not make the agent grow without
// bound.
const maxPackages = 100000

// parseDpkgStatus reads dpkg's status file (/var/lib/dpkg/status): one
// stanza per package, separated by blank lines. Only packages whose Status
// ends in "installed" are listed.
func parseDpkgStatus(r io.Reader) ([]Package, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var out []Package
	var name, version string
	installed := false
	flush := func() {
		if name != "" && installed && len(out) < maxPackages {
			out = append(out, Package{Name: name, Version: version})
		}
		name, version, installed = "", "", false
	}
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch string(k) {
		case "Package":
			name = string(v)
		case "Version":
			version = string(v)
		case "Status":
			f := bytes.Fields(v)
			installed = len(f) == 3 && string(f[2]) == "installed"
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("dpkg status: %w", err)
	}
	return out, nil
}

// parseNameVersionLines reads "name<TAB>version" lines (the rpm query
// format used by rpmPackages).
func parseNameVersionLines(r io.Reader) ([]Package, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var out []Package
	for sc.Scan() && len(out) < maxPackages {
		name, version, _ := strings.Cut(sc.Text(), "\t")
		if name = strings.TrimSpace(name); name != "" {
			out = append(out, Package{Name: name, Version: strings.TrimSpace(version)})
		}
	}
	return out, sc.Err()
}

// runLister runs a package lister and parses its standard output. A
// lister that outlives ctx is killed; one whose children keep the pipe
// open is given up on a second later.
func runLister(ctx context.Context, parse func(io.Reader) ([]Package, error), name string, args ...string) ([]Package, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, n: 4096}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pkgs, perr := parse(out)
	_, _ = io.Copy(io.Discard, out) // let the lister finish writing
	werr := cmd.Wait()
	if werr != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			werr = fmt.Errorf("%w: %s", werr, msg)
		}
		return nil, fmt.Errorf("%s: %w", name, werr)
	}
	return pkgs, perr
}

// limitedBuffer keeps the first n bytes written to it.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

// Write implements io.Writer, dropping what does not fit.
func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// errNoPackageDB is returned where no package database was found.
var errNoPackageDB = fmt.Errorf("%w: no package database found", errors.ErrUnsupported)
