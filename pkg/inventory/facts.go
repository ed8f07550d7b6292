package inventory

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of custom facts.
const (
	// MaxFactsOutput is the most a facts file or a facts executable's
	// output may hold.
	MaxFactsOutput = 64 << 10
	// MaxFactKey and MaxFactValue bound one fact.
	MaxFactKey   = 128
	MaxFactValue = 1024
	// MaxFactsFiles is the most entries of a facts directory looked at.
	MaxFactsFiles = 256
	// DefaultFactsTimeout bounds running all the facts executables of a
	// directory together.
	DefaultFactsTimeout = 10 * time.Second
)

// ErrBadFacts is wrapped by the errors of facts that cannot be parsed.
var ErrBadFacts = errors.New("bad facts")

// ParseFacts parses facts: a JSON object when the first non-blank byte is
// '{', otherwise key=value lines. In key=value form, blank lines and lines
// starting with '#' are ignored, and key and value are trimmed of white
// space. In JSON form, string values are taken as they are, numbers and
// booleans as their JSON text, null values are ignored, and objects and
// arrays are an error (facts are flat). Keys are 1 to MaxFactKey bytes of
// UTF-8 without white space, control characters or '='; values at most
// MaxFactValue bytes of UTF-8. Any error rejects all of data.
func ParseFacts(data []byte) (map[string]string, error) {
	trimmed := bytes.TrimLeftFunc(data, unicode.IsSpace)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return parseJSONFacts(trimmed)
	}
	facts := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxFactsOutput+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: want key=value", ErrBadFacts, n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if err := checkFact(k, v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		facts[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFacts, err)
	}
	return facts, nil
}

func parseJSONFacts(data []byte) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: json: %v", ErrBadFacts, err)
	}
	facts := make(map[string]string, len(raw))
	for k, r := range raw {
		r = bytes.TrimSpace(r)
		var v string
		switch r[0] {
		case '"':
			if err := json.Unmarshal(r, &v); err != nil {
				return nil, fmt.Errorf("%w: key %q: %v", ErrBadFacts, k, err)
			}
		case '{', '[':
			return nil, fmt.Errorf("%w: key %q: value is an object or array; facts are flat", ErrBadFacts, k)
		case 'n': // null
			continue
		default: // number, true, false
			v = string(r)
		}
		if err := checkFact(k, v); err != nil {
			return nil, err
		}
		facts[k] = v
	}
	return facts, nil
}

// checkFact validates one fact.
func checkFact(k, v string) error {
	switch {
	case k == "":
		return fmt.Errorf("%w: empty key", ErrBadFacts)
	case len(k) > MaxFactKey:
		return fmt.Errorf("%w: key %.20q…: longer than %d bytes", ErrBadFacts, k, MaxFactKey)
	case !utf8.ValidString(k) || strings.ContainsFunc(k, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '=' }):
		return fmt.Errorf("%w: key %q: white space, control characters and '=' are not allowed", ErrBadFacts, k)
	case len(v) > MaxFactValue:
		return fmt.Errorf("%w: key %q: value longer than %d bytes", ErrBadFacts, k, MaxFactValue)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: key %q: value is not valid UTF-8", ErrBadFacts, k)
	}
	return nil
}

// LoadFactsDir reads the facts of a directory. Every regular file is a
// source, in lexical order of names, later ones overriding earlier ones;
// names starting with '.' and ending with '~' are ignored, and so are
// subdirectories. An executable file (Unix: any execute bit; Windows:
// .exe, .bat, .cmd, .ps1) is run with no arguments and its standard output
// parsed; any other file is read. Either way the content is parsed by
// ParseFacts and is at most MaxFactsOutput bytes.
//
// Executables run one after another, all within timeout (default
// DefaultFactsTimeout) or ctx, whichever ends first: one still running
// then is killed. On Unix an executable is run only when it, and the
// directory, are owned by root or the agent's user and writable by no one
// else (it runs with the agent's privileges).
//
// A source that fails (unreadable, bad content, non-zero exit, killed)
// contributes no facts and one error, naming it; the others still count.
// A directory that does not exist has no facts and is no error.
func LoadFactsDir(ctx context.Context, dir string, timeout time.Duration) (map[string]string, []error) {
	facts := map[string]string{}
	if dir == "" {
		return facts, nil
	}
	if timeout <= 0 {
		timeout = DefaultFactsTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dirInfo, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return facts, nil
	}
	if err != nil {
		return facts, []error{fmt.Errorf("facts dir: %w", err)}
	}
	if !dirInfo.IsDir() {
		return facts, []error{fmt.Errorf("facts dir %s: not a directory", dir)}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return facts, []error{fmt.Errorf("facts dir: %w", err)}
	}
	var errs []error
	if len(entries) > MaxFactsFiles {
		errs = append(errs, fmt.Errorf("facts dir %s: %d entries, only the first %d are read", dir, len(entries), MaxFactsFiles))
		entries = entries[:MaxFactsFiles]
	}
	for _, e := range entries { // ReadDir sorts by name
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
			continue
		}
		path := filepath.Join(dir, name)
		info, err := os.Stat(path) // follows symlinks
		if err != nil {
			errs = append(errs, fmt.Errorf("facts %s: %w", name, err))
			continue
		}
		if !info.Mode().IsRegular() {
			continue
		}
		var got map[string]string
		if isExecutable(name, info) {
			if err := runnable(dirInfo, info); err != nil {
				errs = append(errs, fmt.Errorf("facts %s: not run: %w", name, err))
				continue
			}
			got, err = runFacts(ctx, path)
		} else {
			got, err = readFacts(path)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("facts %s: %w", name, err))
			continue
		}
		for k, v := range got {
			facts[k] = v
		}
	}
	return facts, errs
}

// readFacts reads and parses a facts file.
func readFacts(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFactsOutput+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFactsOutput {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadFacts, MaxFactsOutput)
	}
	return ParseFacts(data)
}

// runFacts runs a facts executable and parses its output.
func runFacts(ctx context.Context, path string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("not run: the facts timeout is used up: %w", err)
	}
	cmd := command(ctx, path)
	cmd.Dir = filepath.Dir(path)
	cmd.WaitDelay = time.Second // a child holding the pipe open cannot stall us
	var stdout, stderr capped
	stdout.max, stderr.max = MaxFactsOutput+1, 512
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("killed: took longer than the facts timeout")
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.b.String()); msg != "" {
			return nil, fmt.Errorf("%w: %s", err, msg)
		}
		return nil, err
	}
	if stdout.b.Len() > MaxFactsOutput {
		return nil, fmt.Errorf("%w: output larger than %d bytes", ErrBadFacts, MaxFactsOutput)
	}
	return ParseFacts(stdout.b.Bytes())
}

// capped keeps the first max bytes written to it.
type capped struct {
	b   bytes.Buffer
	max int
}

// Write implements io.Writer, dropping what does not fit.
func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// mergeFacts returns the facts of the directory overridden by the
// configuration's: the configuration is what the operator set and
// reviewed, and a script must not change how commands are targeted at
// the host behind their back.
func mergeFacts(dirFacts, config map[string]string) map[string]string {
	out := make(map[string]string, len(dirFacts)+len(config))
	for k, v := range dirFacts {
		out[k] = v
	}
	for k, v := range config {
		out[k] = v
	}
	return out
}

// sortedErrs renders errors as sorted strings.
func sortedErrs(errs []error) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Error())
	}
	slices.Sort(out)
	return out
}
