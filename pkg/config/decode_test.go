package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type decodeCase struct {
	name  string
	yaml  string   // the whole file ($K1.. replaced)
	at    string   // the first error is on the first line containing this ("" = no line)
	paths []string // exactly the key paths of all errors, in order
	msg   string   // a part of the first error's text
}

var decodeCases = []decodeCase{
	{name: "unknown top-level key", yaml: baseYAML + "colour: red\n", at: "colour", paths: []string{"colour"}, msg: "unknown key (known keys: host_id, data_dir,"},
	{
		name:  "unknown nested key",
		yaml:  "broker:\n  urls: [tcp://127.0.0.1:1883]\n  tsl: {ca_file: x}\nsecurity:\n  require_signed: false\n",
		at:    "tsl",
		paths: []string{"broker.tsl"},
		msg:   "unknown key",
	},
	{name: "dev is not a file key", yaml: baseYAML + "dev: true\n", at: "dev", paths: []string{"dev"}, msg: "unknown key"},
	{
		name:  "unknown key in a trusted key",
		yaml:  "broker: {urls: [tcp://127.0.0.1:1883]}\nsecurity:\n  trusted_keys:\n    - id: ops\n      public_key: \"$K1\"\n      kind: [ping]\n",
		at:    "kind:",
		paths: []string{"security.trusted_keys[0].kind"},
	},
	{name: "unknown key after a merge", yaml: baseYAML + "m: &m {qos: 1}\n", at: "m:", paths: []string{"m"}},
	{name: "integer expected", yaml: baseYAML + "exec:\n  max_concurrent: many\n", at: "many", paths: []string{"exec.max_concurrent"}, msg: `want an integer, got "many"`},
	{name: "float for integer", yaml: baseYAML + "exec: {max_queue: 1.5}\n", at: "max_queue", paths: []string{"exec.max_queue"}},
	{name: "integer overflow", yaml: baseYAML + "exec: {max_queue: 99999999999999999999999}\n", at: "max_queue", paths: []string{"exec.max_queue"}},
	{name: "bool expected", yaml: baseYAML + "metrics: {retain: maybe}\n", at: "maybe", paths: []string{"metrics.retain"}, msg: `want true or false, got "maybe"`},
	{
		name:  "pointer bool expected",
		yaml:  "broker: {urls: [tcp://127.0.0.1:1883]}\nsecurity:\n  require_signed: [yes]\n",
		at:    "require_signed",
		paths: []string{"security.require_signed", "security.trusted_keys"},
		msg:   "want true or false, got a list",
	},
	{name: "bad duration", yaml: baseYAML + "metrics: {interval: fast}\n", at: "fast", paths: []string{"metrics.interval"}, msg: `invalid duration "fast"`},
	{name: "duration without unit", yaml: baseYAML + "inventory:\n  interval: 3600\n", at: "3600", paths: []string{"inventory.interval"}, msg: `invalid duration "3600"`},
	{name: "duration as a list", yaml: baseYAML + "metrics: {interval: [1s]}\n", at: "interval", paths: []string{"metrics.interval"}, msg: "want a duration such as 10s, 5m or 1h, got a list"},
	{name: "mapping expected", yaml: "broker: [tcp://127.0.0.1:1883]\nsecurity: {require_signed: false}\n", at: "broker", paths: []string{"broker"}, msg: "want a mapping, got a list"},
	{
		name:  "list expected",
		yaml:  "broker: {urls: tcp://127.0.0.1:1883}\nsecurity: {require_signed: false}\n",
		at:    "urls",
		paths: []string{"broker.urls"},
		msg:   "want a list, got \"tcp://127.0.0.1:1883\"",
	},
	{name: "list item is a mapping", yaml: baseYAML + "groups: [web, {a: b}]\n", at: "groups", paths: []string{"groups[1]"}, msg: "want a string, got a mapping"},
	{name: "empty list item", yaml: baseYAML + "groups: [web, ~]\n", at: "groups", paths: []string{"groups[1]"}, msg: "empty list item"},
	{name: "fact is a list", yaml: baseYAML + "facts:\n  env: [prod]\n", at: "env", paths: []string{"facts.env"}},
	{name: "duplicate key", yaml: baseYAML + "host_id: a\nhost_id: b\n", at: "host_id: b", paths: []string{"host_id"}, msg: "duplicate key (first at line 6)"},
	{name: "duplicate nested key", yaml: "broker:\n  urls: [tcp://127.0.0.1:1883]\n  urls: [tcp://127.0.0.1:1884]\nsecurity: {require_signed: false}\n", at: "1884", paths: []string{"broker.urls"}},
	{name: "key is not a string", yaml: baseYAML + "? [a]\n: b\n", at: "[a]", paths: []string{""}, msg: "a key must be a string"},
	{name: "merge of a scalar", yaml: baseYAML + "metrics: {<<: 5}\n", at: "<<", paths: []string{"metrics"}, msg: "merge (<<)"},
	{name: "syntax error", yaml: baseYAML + "exec: {max_queue: [\n", at: "exec", paths: []string{""}},
	{name: "tab indentation", yaml: "broker:\n\turls: []\n", at: "\turls", paths: []string{""}},
	{name: "two documents", yaml: baseYAML + "---\nhost_id: x\n", at: "---", paths: []string{""}, msg: "more than one YAML document"},
	{name: "top level is a list", yaml: "- a\n- b\n", at: "- a", paths: []string{""}, msg: "want a mapping, got a list"},
	{name: "top level is a scalar", yaml: "hello\n", at: "hello", paths: []string{""}},
	{name: "decode and validation errors together", yaml: baseYAML + "colour: red\nexec: {max_queue: 0}\n", at: "colour", paths: []string{"colour", "exec.max_queue"}},
}

var goType = regexp.MustCompile(`(^|\n|: )yaml: |config\.[A-Z]|into int|!!`)

// lineOf is the 1-based line of the first line of s containing sub.
func lineOf(s, sub string) int {
	for i, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	return -1
}

func TestDecodeErrors(t *testing.T) {
	for _, tt := range decodeCases {
		t.Run(tt.name, func(t *testing.T) {
			data := subst(tt.yaml)
			_, err := Parse([]byte(data), "t.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded, want errors at %q", tt.paths)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid")
			}
			fes := fieldErrors(t, err)
			var paths []string
			for _, fe := range fes {
				paths = append(paths, fe.Path)
				if fe.Path != "" && !pathExists(fe.Path) && !strings.Contains(fe.Error(), "unknown key") {
					t.Errorf("path %q is not a YAML key of the config", fe.Path)
				}
			}
			if !slices.Equal(paths, tt.paths) {
				t.Errorf("paths = %q, want %q\nerror: %v", paths, tt.paths, err)
			}
			if len(fes) == 0 {
				return
			}
			first := fes[0]
			if want := lineOf(data, tt.at); tt.at != "" && first.Line != want {
				t.Errorf("line = %d, want %d: %v", first.Line, want, first)
			}
			prefix := fmt.Sprintf("config t.yaml: line %d: ", first.Line)
			if first.Path != "" {
				prefix += first.Path + ": "
			}
			if !strings.HasPrefix(first.Error(), prefix) {
				t.Errorf("error %q does not start with %q", first.Error(), prefix)
			}
			if tt.msg != "" && !strings.Contains(first.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", first.Error(), tt.msg)
			}
			if goType.MatchString(err.Error()) {
				t.Errorf("error shows yaml or Go internals: %v", err)
			}
		})
	}
}

// strictYAML decodes data the plain way, yaml's Decoder with KnownFields,
// over the defaults.
func strictYAML(data []byte) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err.Error() != "EOF" {
		return nil, err
	}
	c.fillDefaults()
	return c, nil
}

// checkAgainstYAML checks that decode is at least as strict as yaml's
// KnownFields decoding, and gives the same config when it accepts data.
func checkAgainstYAML(t *testing.T, data []byte) {
	t.Helper()
	got, err := decode(data, "")
	want, werr := strictYAML(data)
	if werr != nil {
		if err == nil {
			t.Errorf("yaml rejects (%v) what decode accepts:\n%s", werr, data)
		}
		return
	}
	if err != nil {
		return // decode is stricter (duplicate keys, several documents)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decode and yaml differ on\n%s\ndecode: %+v\nyaml:   %+v", data, got, want)
	}
}

func TestDecodeAgreesWithYAML(t *testing.T) {
	for _, data := range seeds(t) {
		checkAgainstYAML(t, data)
	}
}

// seeds is every YAML text of the tables.
func seeds(t testing.TB) [][]byte {
	out := [][]byte{
		[]byte(subst(baseYAML)), []byte(subst(protocolExample)), []byte(subst(fullExample)),
		nil, []byte("{}"), []byte("~"), []byte("# only a comment\n"),
		[]byte("a: &a [*a]"), []byte("a: &a\n  b: *a\n"), []byte("metrics: {<<: [{qos: 1}, {qos: 0, retain: true}]}\n"),
	}
	for _, tt := range invalidCases {
		out = append(out, overBase(t, tt.yaml))
	}
	for _, tt := range decodeCases {
		out = append(out, []byte(subst(tt.yaml)))
	}
	return out
}

func TestAliasBomb(t *testing.T) {
	// Merge keys that double at every level: 2^40 visits if unbounded.
	var b strings.Builder
	b.WriteString("x0: &a0 {qos: 1}\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "x%d: &a%d {<<: [*a%d, *a%d]}\n", i, i, i-1, i-1)
	}
	b.WriteString("metrics: {<<: *a40}\n")
	_, err := Parse([]byte(b.String()), "bomb.yaml")
	if err == nil || !strings.Contains(err.Error(), "too many aliases or merges") {
		t.Fatalf("Parse = %v, want a too many aliases error", err)
	}
}

func TestErrorCap(t *testing.T) {
	var b strings.Builder
	for i := range 150 {
		fmt.Fprintf(&b, "k%d: 1\n", i)
	}
	_, err := Parse([]byte(b.String()), "many.yaml")
	fes := fieldErrors(t, err)
	if len(fes) != maxErrors+1 || fes[maxErrors].Error() != "config many.yaml: 50 more errors not shown" {
		t.Errorf("got %d errors, last %v", len(fes), fes[len(fes)-1])
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// decode and Validate directly: Parse's recover would hide a panic.
		c, err := decode(data, "fuzz.yaml")
		if c == nil {
			if err == nil {
				t.Fatal("decode returned neither a config nor an error")
			}
			return
		}
		verr := c.Validate()
		for _, e := range []error{err, verr} {
			if e != nil && !errors.Is(e, ErrInvalid) {
				t.Fatalf("error not marked invalid: %v", e)
			}
		}
		checkAgainstYAML(t, data)
		if err != nil || verr != nil {
			return
		}
		if _, err := Parse(data, "fuzz.yaml"); err != nil {
			t.Fatalf("Parse rejects what decode and Validate accept: %v", err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := Parse(out, "fuzz.yaml")
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip changed the config\n%+v\n%+v", c, back)
		}
		_ = c.Redacted()
	})
}
