package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize is the largest configuration file accepted.
const MaxFileSize = 4 << 20

// maxVisits bounds the work of decoding, which aliases and merge keys could
// otherwise make exponential in the size of the file.
const maxVisits = 1 << 20

// Load reads the file at path, decodes it strictly (an unknown key is an
// error) over the defaults, and validates the result. A file that cannot
// be read gives an error wrapping the os error (errors.Is(err,
// fs.ErrNotExist) works); a bad file gives every problem joined, each a
// *FieldError.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return Parse(data, path)
}

// Parse is Load from bytes; source names the file in error messages.
func Parse(data []byte, source string) (cfg *Config, err error) {
	defer func() {
		// The YAML parser must not take the agent down on a bad file.
		if r := recover(); r != nil {
			cfg, err = nil, &FieldError{Source: source, Err: fmt.Errorf("yaml parser failed: %v", r)}
		}
	}()
	c, err := decode(data, source)
	if c == nil {
		return nil, err
	}
	verr := c.Validate()
	if err == nil && verr == nil {
		return c, nil
	}
	// Report the problems of the values that did decode too, so that one
	// run shows every problem; but not those of keys that failed to decode
	// (they would only repeat the problem).
	return nil, errors.Join(err, withoutDecodeFailures(verr, err))
}

// withoutDecodeFailures drops from verr the errors at or under a key path
// where decoding failed (decodeErr); a failure with no path drops them all.
func withoutDecodeFailures(verr, decodeErr error) error {
	if verr == nil || decodeErr == nil {
		return verr
	}
	var failed []string
	for _, e := range flatten(decodeErr) {
		var fe *FieldError
		if errors.As(e, &fe) {
			if fe.Path == "" {
				return nil
			}
			failed = append(failed, fe.Path)
		}
	}
	var keep []error
	for _, e := range flatten(verr) {
		var fe *FieldError
		if errors.As(e, &fe) && slices.ContainsFunc(failed, func(p string) bool {
			return fe.Path == p || strings.HasPrefix(fe.Path, p+".") || strings.HasPrefix(fe.Path, p+"[")
		}) {
			continue
		}
		keep = append(keep, e)
	}
	return errors.Join(keep...)
}

// flatten lists the errors joined in err.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// decode decodes data over Default() without validating it. When the YAML
// could be parsed it returns the config (the keys that failed keep their
// defaults) with the decoding errors, else only an error.
func decode(data []byte, source string) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, &FieldError{Source: source, Err: fmt.Errorf("file larger than %d bytes", MaxFileSize)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(source, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(source, err)
		}
		return nil, &FieldError{Source: source, Line: extra.Line, Err: errors.New("more than one YAML document")}
	}
	c := Default()
	c.source = source
	d := &decoder{source: source}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		d.value(doc.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	c.fillDefaults()
	return c, d.err()
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// yamlError turns a yaml syntax error into a *FieldError carrying the line
// yaml gives.
func yamlError(source string, err error) error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	return &FieldError{Source: source, Line: line, Err: errors.New(msg)}
}

// decoder walks the YAML node tree along the Config struct, so that every
// error names its key path and line. It is as strict as yaml's KnownFields:
// a key with no field is an error, and so is a duplicate key.
type decoder struct {
	source  string
	errs    []error
	dropped int // errors past maxErrors
	visits  int
}

// maxErrors bounds the decoding errors reported for one file.
const maxErrors = 100

func (d *decoder) fail(n *yaml.Node, path string, format string, args ...any) {
	d.add(&FieldError{Source: d.source, Line: n.Line, Path: path, Err: fmt.Errorf(format, args...)})
}

func (d *decoder) add(err error) {
	if len(d.errs) >= maxErrors {
		d.dropped++
		return
	}
	d.errs = append(d.errs, err)
}

// err returns the decoding errors joined.
func (d *decoder) err() error {
	if d.dropped > 0 {
		return errors.Join(append(d.errs, &FieldError{Source: d.source, Err: fmt.Errorf("%d more errors not shown", d.dropped)})...)
	}
	return errors.Join(d.errs...)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// value decodes n into v (addressable) at path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if !d.spend(n, path) {
		return
	}
	n = d.deref(n)
	if n == nil {
		return
	}
	if isNull(n) {
		// A key with no value keeps its default, except that a list, map
		// or pointer is cleared, as yaml does.
		switch v.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer:
			v.SetZero()
		}
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.add(&FieldError{Source: d.source, Line: n.Line, Path: path, Err: err})
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, e := range n.Content {
			ipath := fmt.Sprintf("%s[%d]", path, i)
			if e := d.deref(e); e != nil && isNull(e) {
				// yaml would drop the item silently.
				d.fail(e, ipath, "empty list item")
				continue
			}
			d.value(e, s.Index(i), ipath)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		d.mapping(n, path, func(k, val *yaml.Node) {
			e := reflect.New(v.Type().Elem()).Elem()
			d.value(val, e, joinKey(path, k.Value))
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
		})
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		before := len(d.errs) + d.dropped
		d.value(n, p.Elem(), path)
		if len(d.errs)+d.dropped == before {
			v.Set(p)
		}
	default:
		d.scalar(n, v, path)
	}
}

// scalar decodes a leaf (string, bool, int) with yaml's own rules.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "want %s, got %s", want(v.Type()), describe(n))
		return
	}
	if isInt(v.Kind()) && n.ShortTag() != "!!int" {
		// yaml would truncate 1.5 to 1.
		d.fail(n, path, "want %s, got %s", want(v.Type()), describe(n))
		return
	}
	p := reflect.New(v.Type())
	if err := n.Decode(p.Interface()); err != nil {
		d.fail(n, path, "want %s, got %s", want(v.Type()), describe(n))
		return
	}
	v.Set(p.Elem())
}

// structure decodes a mapping into a struct by the fields' yaml names.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	fields := yamlFields(v.Type())
	d.mapping(n, path, func(k, val *yaml.Node) {
		i, ok := fields[k.Value]
		if !ok {
			d.fail(k, joinKey(path, k.Value), "unknown key (known keys: %s)", knownKeys(fields))
			return
		}
		d.value(val, v.Field(i), joinKey(path, k.Value))
	})
}

// mapping calls fn for each key of mapping n. Merge keys (<<) are followed
// first, so that the mapping's own keys win, as YAML specifies.
func (d *decoder) mapping(n *yaml.Node, path string, fn func(k, v *yaml.Node)) {
	if !d.spend(n, path) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping, got %s", describe(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !isMerge(k) {
			continue
		}
		v = d.deref(v)
		if v == nil {
			continue
		}
		switch v.Kind {
		case yaml.MappingNode:
			d.mapping(v, path, fn)
		case yaml.SequenceNode:
			// Earlier mappings in the list win.
			for j := len(v.Content) - 1; j >= 0; j-- {
				if m := d.deref(v.Content[j]); m != nil {
					d.mapping(m, path, fn)
				}
			}
		default:
			d.fail(v, path, "merge (<<) wants a mapping or a list of mappings, got %s", describe(v))
		}
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "a key must be a string, got %s", describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.fail(k, joinKey(path, k.Value), "duplicate key (first at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		if !d.spend(k, path) {
			return
		}
		fn(k, v)
	}
}

// spend counts one step of work and reports whether the budget allows it;
// the first step over budget records the error.
func (d *decoder) spend(n *yaml.Node, path string) bool {
	d.visits++
	if d.visits <= maxVisits {
		return true
	}
	if d.visits == maxVisits+1 {
		d.fail(n, path, "too many aliases or merges (over %d steps)", maxVisits)
	}
	return false
}

// deref follows aliases; it returns nil (after recording an error) for a
// broken one.
func (d *decoder) deref(n *yaml.Node) *yaml.Node {
	for range 100 {
		if n.Kind != yaml.AliasNode {
			return n
		}
		if n.Alias == nil {
			break
		}
		n = n.Alias
	}
	d.fail(n, "", "unresolvable alias")
	return nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// yamlFields maps the yaml names of t's fields to their index.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

func knownKeys(fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return fields[a] - fields[b] })
	return strings.Join(keys, ", ")
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// joinKey appends key to a key path: "broker.urls", or facts["a.b"] when
// the key is not a plain word.
func joinKey(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// want describes what a leaf of type t accepts.
func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	if isInt(t.Kind()) {
		return "an integer"
	}
	return "a " + t.String()
}

func isInt(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// describe names what a node is, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// quote quotes s for an error message, shortened if long.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}
