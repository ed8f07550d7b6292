package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Strict object keys.
//
// encoding/json matches object keys to struct fields case-insensitively
// (Unicode simple folding: "Kind", "KIND", "\u212aind" all fill Kind) and
// keeps the last of duplicate keys, while many other parsers keep the first
// or match exactly. A command such as {"kind":"ping","kind":"exec"} or
// {"kind":"ping","Kind":"exec"} could then be shown as ping by an operator
// tool and run as exec by the agent, under the same signature. Decode
// therefore refuses, in the command object, the signed wrapper, and inside
// args and filter:
//
//   - a key that appears twice (after unescaping, at any depth: in a map
//     such as args.env the last value would silently win too), and
//   - in objects decoded into structs (the command, the wrapper, args,
//     filter), a key that differs from a known field name only in case.
//
// The check is one pass over the bytes json.Unmarshal has already
// validated. It allocates little (two small stacks per call, keys with
// escapes or invalid UTF-8, the errors it reports) and adds about 1 µs to
// Decode of a typical command (BenchmarkDecode).

// schema says how strictly an object's keys are checked.
type schema struct {
	// known are the object's field names; a key that equals one of them
	// only under case folding is refused. nil for maps (exact keys).
	known []string
	// children are the schemas of nested objects, by exact key; other
	// nested objects are maps.
	children map[string]*schema
}

// Field names of the JSON objects Decode reads into structs.
var (
	filterSchema = &schema{known: []string{"hosts", "groups", "os", "facts"}}
	// argsSchema holds the field names of every built-in kind's args
	// (ExecArgs, ShellArgs, ScriptArgs, IDArgs, UpdateArgs, UninstallArgs;
	// a test keeps the list in step with the types). DecodeArgs checks
	// the names of the exact args type of a kind.
	argsSchema = &schema{known: []string{
		"argv", "cwd", "env", "stdin",
		"command", "shell",
		"content", "interpreter", "args",
		"id",
		"version", "url", "sha256", "signature", "allow_downgrade",
		"purge",
	}}
	commandSchema = &schema{
		known: []string{
			"v", "id", "kind", "args", "target", "issued_at", "expires_at",
			"timeout_ms", "stream", "filter", "operator",
			"signed", "kid", "sig",
		},
		children: map[string]*schema{"args": argsSchema, "filter": filterSchema},
	}
)

// keyProblem is one ambiguous key.
type keyProblem struct {
	// top is the top-level field it concerns: the key itself, or for a
	// case variant the field name it resembles ("id" for "ID").
	top string
	err *FieldError
}

// keyProblems are the first ambiguous key of each class, as Decode acts on
// them.
type keyProblems struct {
	critical *FieldError // under "id" or "signed": which command it is is ambiguous
	target   *FieldError
	filter   *FieldError
	other    *FieldError
	// all, when collect is set (tests), is every problem in order.
	collect bool
	all     []keyProblem
}

func (p *keyProblems) add(top string, fe *FieldError) {
	if p.collect {
		p.all = append(p.all, keyProblem{top: top, err: fe})
	}
	slot := &p.other
	switch top {
	case "id", "signed":
		slot = &p.critical
	case "target":
		slot = &p.target
	case "filter":
		slot = &p.filter
	}
	if *slot == nil {
		*slot = fe
	}
}

// first is the first problem found of any class, critical ones first.
func (p *keyProblems) first() *FieldError {
	for _, fe := range []*FieldError{p.critical, p.target, p.filter, p.other} {
		if fe != nil {
			return fe
		}
	}
	return nil
}

// errBadJSON is returned by the scanner on text that is not JSON; Decode
// only scans what json.Unmarshal accepted, so it does not happen there.
var errBadJSON = errors.New("invalid JSON")

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// pathElem is one step from the top-level object to a value.
type pathElem struct {
	key     []byte
	index   int // of an array element
	isIndex bool
}

// keyScanner walks JSON text and checks object keys against a schema.
type keyScanner struct {
	data  []byte
	pos   int
	keys  [][]byte // keys of the open objects, innermost last
	path  []pathElem
	probs *keyProblems
}

// scanKeys checks the object keys of JSON text data against s (for the
// top-level object) and records what it finds in probs. It returns
// errBadJSON when data is not one JSON value; data that is not an object
// has no keys to check.
func scanKeys(data []byte, s *schema, probs *keyProblems) error {
	// Room for the keys and path of a usual command.
	var keys [32][]byte
	var path [8]pathElem
	sc := keyScanner{data: data, probs: probs, keys: keys[:0], path: path[:0]}
	sc.ws()
	if err := sc.value(s, 0); err != nil {
		return err
	}
	sc.ws()
	if sc.pos != len(sc.data) {
		return errBadJSON
	}
	return nil
}

func (s *keyScanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *keyScanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

func (s *keyScanner) value(sch *schema, depth int) error {
	if depth > maxDepth {
		return errBadJSON
	}
	switch s.peek() {
	case '{':
		return s.object(sch, depth)
	case '[':
		return s.array(depth)
	case '"':
		_, _, err := s.str()
		return err
	case 0:
		return errBadJSON
	}
	// A number or a literal: up to the next delimiter.
	start := s.pos
loop:
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			break loop
		case '{', '[', '"', ':':
			return errBadJSON
		}
		s.pos++
	}
	if s.pos == start {
		return errBadJSON
	}
	return nil
}

func (s *keyScanner) array(depth int) error {
	s.pos++ // '['
	s.ws()
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for i := 0; ; i++ {
		s.path = append(s.path, pathElem{index: i, isIndex: true})
		err := s.value(nil, depth+1)
		s.path = s.path[:len(s.path)-1]
		if err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
			s.ws()
		case ']':
			s.pos++
			return nil
		default:
			return errBadJSON
		}
	}
}

func (s *keyScanner) object(sch *schema, depth int) error {
	s.pos++ // '{'
	base := len(s.keys)
	defer func() { s.keys = s.keys[:base] }()
	s.ws()
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		if s.peek() != '"' {
			return errBadJSON
		}
		key, err := s.key()
		if err != nil {
			return err
		}
		s.keys = append(s.keys, key)
		s.checkCase(sch, key)
		s.ws()
		if s.peek() != ':' {
			return errBadJSON
		}
		s.pos++
		s.ws()
		var child *schema
		if sch != nil && sch.children != nil {
			child = sch.children[string(key)]
		}
		s.path = append(s.path, pathElem{key: key})
		err = s.value(child, depth+1)
		s.path = s.path[:len(s.path)-1]
		if err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
			s.ws()
		case '}':
			s.pos++
			s.checkDuplicates(s.keys[base:])
			return nil
		default:
			return errBadJSON
		}
	}
}

// checkDuplicates records every key that appears more than once among
// keys (one object's), once. Sorting costs no more than comparing a few
// keys pairwise and stays O(n log n) for an object with many keys.
func (s *keyScanner) checkDuplicates(keys [][]byte) {
	if len(keys) < 2 {
		return
	}
	slices.SortFunc(keys, bytes.Compare)
	for i := 1; i < len(keys); i++ {
		if bytes.Equal(keys[i], keys[i-1]) && (i == 1 || !bytes.Equal(keys[i], keys[i-2])) {
			s.report(keys[i], "", "duplicate key")
		}
	}
}

// checkCase records key when it is a case variant of a known field name
// of sch.
func (s *keyScanner) checkCase(sch *schema, key []byte) {
	if sch == nil || sch.known == nil {
		return
	}
	for _, name := range sch.known {
		if string(key) == name {
			return
		}
	}
	for _, name := range sch.known {
		if foldEqual(key, name) {
			s.report(key, name, fmt.Sprintf("key differs only in case from %q (keys are case-sensitive)", name))
			return
		}
	}
}

// report records a problem with key of the current object; like is the
// known field name a case variant resembles.
func (s *keyScanner) report(key []byte, like, msg string) {
	var b strings.Builder
	for _, p := range s.path {
		if p.isIndex {
			b.WriteString("[" + strconv.Itoa(p.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(printable(p.key))
	}
	if b.Len() > 0 {
		b.WriteByte('.')
	}
	b.WriteString(printable(key))
	top := like
	if len(s.path) > 0 {
		top = string(s.path[0].key) // "" for an array at the top
	} else if top == "" {
		top = string(key)
	}
	s.probs.add(top, &FieldError{Field: b.String(), Msg: msg})
}

// printable is a key as it may appear in an error: at most 64 bytes, and
// quoted with escapes when it is empty or not plain printable ASCII (a "\u212aind"
// must not look like "Kind").
func printable(key []byte) string {
	if len(key) == 0 {
		return `""`
	}
	cut := ""
	if len(key) > 64 {
		key, cut = key[:64], "…"
	}
	for _, c := range key {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.QuoteToASCII(string(key)) + cut
		}
	}
	return string(key) + cut
}

// foldEqual reports whether key equals name (ASCII) under the simple
// Unicode case folding encoding/json uses to match keys to fields.
func foldEqual(key []byte, name string) bool {
	if len(key) == len(name) {
		ascii := true
		for i := range len(key) {
			c, n := key[i], name[i]
			if c >= utf8.RuneSelf {
				ascii = false
				break
			}
			if c == n {
				continue
			}
			if 'A' <= c && c <= 'Z' && c+'a'-'A' == n || 'a' <= c && c <= 'z' && c-('a'-'A') == n {
				continue
			}
			return false
		}
		if ascii {
			return true
		}
	}
	// Non-ASCII runes fold to ASCII letters too: U+017F (ſ) to s, U+212A
	// (Kelvin sign) to k.
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return bytes.EqualFold(key, []byte(name))
		}
	}
	return false
}

// key reads an object key at s.pos (a '"') and returns it unescaped, as
// encoding/json sees it.
func (s *keyScanner) key() ([]byte, error) {
	start := s.pos
	raw, escaped, err := s.str()
	if err != nil {
		return nil, err
	}
	if !escaped {
		plain := true
		for _, c := range raw {
			if c >= utf8.RuneSelf {
				plain = utf8.Valid(raw)
				break
			}
		}
		if plain {
			return raw, nil
		}
	}
	// Escapes, or invalid UTF-8 (which encoding/json turns into U+FFFD):
	// let encoding/json unquote it.
	var k string
	if err := json.Unmarshal(s.data[start:s.pos], &k); err != nil {
		return nil, errBadJSON
	}
	return []byte(k), nil
}

// str skips a string at s.pos (a '"') and returns its raw contents and
// whether it has escapes.
func (s *keyScanner) str() (raw []byte, escaped bool, err error) {
	start := s.pos + 1
	i := start
	for {
		if i > len(s.data) {
			return nil, false, errBadJSON
		}
		q := bytes.IndexByte(s.data[i:], '"')
		if q < 0 {
			return nil, false, errBadJSON
		}
		if bs := bytes.IndexByte(s.data[i:i+q], '\\'); bs >= 0 {
			escaped = true
			i += bs + 2 // the backslash and the character it escapes
			continue
		}
		s.pos = i + q + 1
		return s.data[start : i+q], escaped, nil
	}
}

// structSchema is the schema of the struct v points to: its JSON field
// names. It is nil when v is not a pointer to a struct (a map, say).
func structSchema(v any) *schema {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	return &schema{known: jsonNames(t.Elem(), nil)}
}

// jsonNames appends the JSON names of struct type t's fields, as
// encoding/json decodes them (embedded structs without a tag inline their
// fields).
func jsonNames(t reflect.Type, names []string) []string {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			names = jsonNames(ft, names)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}
