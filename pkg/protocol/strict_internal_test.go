package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The args field names Decode checks are those of the built-in args types.
func TestArgsSchemaMatchesArgsTypes(t *testing.T) {
	var want []string
	for _, v := range []any{&ExecArgs{}, &ShellArgs{}, &ScriptArgs{}, &IDArgs{}, &UpdateArgs{}, &UninstallArgs{}} {
		for _, n := range structSchema(v).known {
			if !slices.Contains(want, n) {
				want = append(want, n)
			}
		}
	}
	got := slices.Clone(argsSchema.known)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("argsSchema.known = %v, want the args types' names %v", got, want)
	}
	// And the command's names are rawFields'.
	var raw []string
	for _, n := range structSchema(&rawFields{}).known {
		raw = append(raw, n)
	}
	known := slices.Clone(commandSchema.known)
	slices.Sort(raw)
	slices.Sort(known)
	if !slices.Equal(raw, known) {
		t.Fatalf("commandSchema.known = %v, want rawFields' names %v", known, raw)
	}
	filter := slices.Clone(filterSchema.known)
	slices.Sort(filter)
	ff := structSchema(&Filter{}).known
	slices.Sort(ff)
	if !slices.Equal(filter, ff) {
		t.Fatalf("filterSchema.known = %v, want Filter's names %v", filter, ff)
	}
}

func TestJSONNames(t *testing.T) {
	type Inner struct {
		A string `json:"a"`
		B string
	}
	type T struct {
		Inner
		C      int    `json:"c,omitempty"`
		D      int    `json:"-"`
		E      int    `json:",omitempty"`
		hidden int    //nolint:unused // unexported: not decoded
		P      *Inner `json:"p"`
	}
	_ = T{}.hidden
	got := structSchema(&T{}).known
	want := []string{"a", "B", "c", "E", "p"}
	if !slices.Equal(got, want) {
		t.Fatalf("names = %v, want %v", got, want)
	}
	if s := structSchema(map[string]string{}); s != nil {
		t.Errorf("schema of a map = %+v, want nil", s)
	}
	if s := structSchema(T{}); s != nil {
		t.Errorf("schema of a non-pointer = %+v, want nil", s)
	}
	if s := structSchema(nil); s != nil {
		t.Errorf("schema of nil = %+v, want nil", s)
	}
}

func TestScanKeysBadJSON(t *testing.T) {
	for _, in := range []string{"", "{", `{"a"`, `{"a":}`, `{"a":1,}`, `{"a":1 "b":2}`, `[1,`, `"abc`, `"ab\`, `{"a":1}x`, `{1:2}`, `[}`, `{"a":[1,2}`} {
		var p keyProblems
		if err := scanKeys([]byte(in), commandSchema, &p); !errors.Is(err, errBadJSON) {
			t.Errorf("scanKeys(%q) = %v, want errBadJSON", in, err)
		}
	}
}

func TestPrintable(t *testing.T) {
	tests := map[string]string{
		"kind":                  "kind",
		"":                      `""`,
		"\u212aind":             `"\u212aind"`,
		"a\"b":                  `"a\"b"`,
		"\xff":                  `"\xff"`,
		strings.Repeat("x", 70): strings.Repeat("x", 64) + "…",
	}
	for in, want := range tests {
		if got := printable([]byte(in)); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// refProblems is a reference implementation of the key checks built on
// encoding/json's tokenizer, which unescapes keys itself: the set of
// "field: msg" strings for a valid JSON text.
func refProblems(t testing.TB, data []byte, sch *schema) map[string]bool {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // 1e1000 is valid JSON
	out := map[string]bool{}
	var walk func(sch *schema, path string) error
	join := func(path, key string) string {
		if path == "" {
			return printable([]byte(key))
		}
		return path + "." + printable([]byte(key))
	}
	walk = func(sch *schema, path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			count := map[string]int{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k := kt.(string)
				count[k]++
				if count[k] == 2 {
					out[join(path, k)+": duplicate key"] = true
				}
				if sch != nil && sch.known != nil && !slices.Contains(sch.known, k) {
					for _, n := range sch.known {
						if strings.EqualFold(k, n) {
							out[join(path, k)+": "+fmt.Sprintf("key differs only in case from %q (keys are case-sensitive)", n)] = true
							break
						}
					}
				}
				var child *schema
				if sch != nil {
					child = sch.children[k]
				}
				if err := walk(child, join(path, k)); err != nil {
					return err
				}
			}
			_, err := dec.Token() // '}'
			return err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(nil, path+"["+strconv.Itoa(i)+"]"); err != nil {
					return err
				}
			}
			_, err := dec.Token() // ']'
			return err
		}
		return nil
	}
	if err := walk(sch, ""); err != nil {
		t.Fatalf("reference walk of valid JSON %q: %v", data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("reference walk of %q: trailing data", data)
	}
	return out
}

// FuzzScanKeys: on any input the scanner does not panic; on valid JSON it
// finds exactly the problems the token-based reference finds, and on
// invalid JSON it may report errBadJSON (Decode never scans such input).
func FuzzScanKeys(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":"a","kind":"ping","kind":"exec"}`,
		`{"Kind":"exec","args":{"argv":["x"],"ARGV":["y"],"env":{"A":"1","A":"2","a":"3"}}}`,
		`{"\u212aind":1,"ſtream":true,"kin\u0064":2,"kind":3}`,
		`{"filter":{"os":"l","OS":"w","facts":{"e":"1","e":"2"}},"target":"all","target":"x"}`,
		`[{"a":1,"a":2},[{"b":{"c":1,"c":2}}]]`,
		"{\"k\xffx\":1,\"k\xfex\":2}",
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":18}`,
		`{"":1,"":2," ":3}`,
		`"just a string"`, `12`, `null`, `{}`, `[]`, `{"a":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := keyProblems{collect: true}
		err := scanKeys(data, commandSchema, &p)
		if !json.Valid(data) {
			return // no panic is all that is asked
		}
		if err != nil {
			t.Fatalf("scanKeys(%q) = %v on valid JSON", data, err)
		}
		got := map[string]bool{}
		for _, kp := range p.all {
			got[kp.err.Error()] = true
		}
		want := refProblems(t, data, commandSchema)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("scanKeys(%q):\n got %v\nwant %v", data, got, want)
		}
	})
}

// FuzzFoldEqual ties foldEqual to encoding/json itself: a key fills a
// struct field exactly when it equals the field's name or foldEqual says
// it is a case variant of it.
func FuzzFoldEqual(f *testing.F) {
	for _, s := range []string{"kind", "Kind", "KIND", "\u212aind", "ſtream", "ſha256", "issued_at", "ISSUED_AT", "issuedat", "kınd", "kİnd", "sha256", "SHA256", "ss", "ß"} {
		f.Add(s)
	}
	type target struct {
		Kind     *int `json:"kind"`
		Stream   *int `json:"stream"`
		IssuedAt *int `json:"issued_at"`
		SHA      *int `json:"sha256"`
	}
	f.Fuzz(func(t *testing.T, key string) {
		payload, err := json.Marshal(map[string]int{key: 1})
		if err != nil {
			t.Skip()
		}
		var v target
		if err := json.Unmarshal(payload, &v); err != nil {
			t.Fatalf("Unmarshal(%s): %v", payload, err)
		}
		// json.Marshal turns invalid UTF-8 into U+FFFD: compare with the
		// key as encoding/json sees it.
		var m map[string]int
		if err := json.Unmarshal(payload, &m); err != nil || len(m) != 1 {
			t.Fatalf("Unmarshal(%s) into a map: %v", payload, err)
		}
		for k := range m {
			key = k
		}
		for name, filled := range map[string]bool{"kind": v.Kind != nil, "stream": v.Stream != nil, "issued_at": v.IssuedAt != nil, "sha256": v.SHA != nil} {
			matches := key == name || foldEqual([]byte(key), name)
			if matches != filled {
				t.Fatalf("key %q, field %q: encoding/json fills it: %v; foldEqual/exact: %v", key, name, filled, matches)
			}
		}
	})
}
