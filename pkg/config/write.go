package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Initial holds the settings of a new configuration file, as written by
// `mqagent config init` (at install time, from an installer's properties).
// Empty fields are left out of the file, so that the agent uses its
// defaults, which may change with its version, for them.
type Initial struct {
	// HostID pins the host id; empty derives it from the hostname at each
	// start (what cloned machine images want).
	HostID string
	// DataDir is written when set; empty is DefaultDataDir().
	DataDir    string
	BrokerURLs []string
	Groups     []string
	// TLS names the broker TLS files (paths on this host).
	TLS TLS
	// TrustedKeys are the operator keys; a nil Kinds list is every kind.
	TrustedKeys []TrustedKey
	// Comment is written at the top of the file as YAML comments, one
	// "# " line per line of text.
	Comment string
}

// initFile is the YAML shape of an Initial: only the keys that are set.
type initFile struct {
	HostID   string       `yaml:"host_id,omitempty"`
	DataDir  string       `yaml:"data_dir,omitempty"`
	Broker   initBroker   `yaml:"broker"`
	Groups   []string     `yaml:"groups,omitempty"`
	Security initSecurity `yaml:"security,omitempty"`
}

type initBroker struct {
	URLs []string `yaml:"urls"`
	TLS  *initTLS `yaml:"tls,omitempty"`
}

type initTLS struct {
	CAFile   string `yaml:"ca_file,omitempty"`
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

type initSecurity struct {
	TrustedKeys []initKey `yaml:"trusted_keys,omitempty"`
}

type initKey struct {
	ID        string   `yaml:"id"`
	PublicKey string   `yaml:"public_key"`
	Kinds     []string `yaml:"kinds,omitempty"`
}

// Render returns the YAML of a minimal configuration file holding the
// settings of i. The result is checked as the agent will load it (Parse,
// which also checks that the TLS files exist and can be read): a problem
// is returned as an error, each part a *FieldError.
func (i Initial) Render() ([]byte, error) {
	f := initFile{
		HostID:  i.HostID,
		DataDir: i.DataDir,
		Broker:  initBroker{URLs: i.BrokerURLs},
		Groups:  i.Groups,
	}
	if f.Broker.URLs == nil {
		f.Broker.URLs = []string{} // written as [], so the file shows the key to fill in
	}
	if t := i.TLS; t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
		f.Broker.TLS = &initTLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}
	}
	for _, k := range i.TrustedKeys {
		f.Security.TrustedKeys = append(f.Security.TrustedKeys, initKey{ID: k.ID, PublicKey: k.PublicKey, Kinds: k.Kinds})
	}
	var b bytes.Buffer
	for line := range strings.Lines(i.Comment) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			b.WriteString("#\n")
			continue
		}
		b.WriteString("# " + line + "\n")
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	if _, err := Parse(b.Bytes(), ""); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteOptions controls WriteFile and WritePrivateFile.
type WriteOptions struct {
	// Overwrite replaces an existing file. Without it an existing file is
	// left as it is and the error matches fs.ErrExist.
	Overwrite bool
}

// WriteFile checks that data is a valid configuration (as Load would read
// it from path) and writes it to path with WritePrivateFile.
func WriteFile(path string, data []byte, opts WriteOptions) error {
	if _, err := Parse(data, path); err != nil {
		return err
	}
	return WritePrivateFile(path, data, opts)
}

// WritePrivateFile writes data to path atomically (a temporary file in the
// same directory, synced, then renamed), readable only by its owner: mode
// 0600 on Unix; on Windows an ACL (not inherited) granting SYSTEM and
// Administrators full control and nobody else anything. The access is
// restricted before any byte is written. Missing parent directories are
// created with the same restriction (0700, or the same ACL inherited by
// what is created inside); existing directories are left as they are.
// Without opts.Overwrite an existing file is never replaced, not even by
// a concurrent writer, and the error matches fs.ErrExist.
func WritePrivateFile(path string, data []byte, opts WriteOptions) (err error) {
	if path == "" {
		return errors.New("write: no file name")
	}
	path = filepath.Clean(path)
	if fi, err := os.Lstat(path); err == nil {
		if !opts.Overwrite {
			return fmt.Errorf("write %s: refusing to overwrite an existing file: %w", path, fs.ErrExist)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("write %s: not a regular file", path)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := makePrivateDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := restrictFile(tmpName); err != nil {
		return fmt.Errorf("write %s: restrict access: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = rename(tmpName, path, opts.Overwrite); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: refusing to overwrite an existing file: %w", path, err)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(dir)
	return nil
}

// makePrivateDir creates dir and its missing parents when it does not
// exist, restricting access to each directory it creates (restrictDir);
// existing directories are left as they are.
func makePrivateDir(dir string) error {
	var missing []string // from dir up
	for d := dir; ; {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", d)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := restrictDir(missing[i]); err != nil {
			return fmt.Errorf("restrict access to %s: %w", missing[i], err)
		}
	}
	return nil
}
