package inventory

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestParseFacts(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{"key=value lines", "env=prod\n# a comment\n\n  rack = r12  \nurl=http://x/?a=b\n",
			map[string]string{"env": "prod", "rack": "r12", "url": "http://x/?a=b"}, ""},
		{"empty value", "note=\n", map[string]string{"note": ""}, ""},
		{"crlf", "a=1\r\nb=2\r\n", map[string]string{"a": "1", "b": "2"}, ""},
		{"later line wins", "a=1\na=2\n", map[string]string{"a": "2"}, ""},
		{"empty", "", map[string]string{}, ""},
		{"json object", ` {"env":"prod","cores":8,"ratio":1.5,"ssd":true,"gone":null,"dc.name":"fra"}`,
			map[string]string{"env": "prod", "cores": "8", "ratio": "1.5", "ssd": "true", "dc.name": "fra"}, ""},
		{"line without =", "env=prod\njunk\n", nil, "line 2: want key=value"},
		{"empty key", "=x\n", nil, "empty key"},
		{"space in key", "my key=x\n", nil, "white space"},
		{"long value", "k=" + strings.Repeat("v", MaxFactValue+1), nil, "value longer than"},
		{"long key", strings.Repeat("k", MaxFactKey+1) + "=v", nil, "longer than 128 bytes"},
		{"invalid utf-8", "k=\xff\n", nil, "not valid UTF-8"},
		{"nested json", `{"a":{"b":1}}`, nil, "facts are flat"},
		{"json array", `{"a":[1,2]}`, nil, "facts are flat"},
		{"broken json", `{"a":`, nil, "json"},
		{"json key with =", `{"a=b":"c"}`, nil, "'='"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFacts([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadFacts) {
					t.Fatalf("err = %v, want one containing %q wrapping ErrBadFacts", err, tt.wantErr)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseFacts(f *testing.F) {
	for _, s := range []string{"a=b\n", `{"a":"b"}`, "# x\n=\n", `{"a":1e999}`, "{", "k=\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		facts, err := ParseFacts(data)
		if err != nil {
			return
		}
		for k, v := range facts {
			if checkFact(k, v) != nil {
				t.Fatalf("accepted a fact that checkFact rejects: %q=%q", k, v)
			}
		}
	})
}

func TestLoadFactsDirMissing(t *testing.T) {
	facts, errs := LoadFactsDir(context.Background(), t.TempDir()+"/nope", 0)
	if len(facts) != 0 || errs != nil {
		t.Fatalf("%v %v", facts, errs)
	}
	facts, errs = LoadFactsDir(context.Background(), "", 0)
	if len(facts) != 0 || errs != nil {
		t.Fatalf("%v %v", facts, errs)
	}
}

func TestMergeFactsConfigWins(t *testing.T) {
	got := mergeFacts(map[string]string{"env": "dev", "rack": "r1"}, map[string]string{"env": "prod"})
	if !maps.Equal(got, map[string]string{"env": "prod", "rack": "r1"}) {
		t.Fatal(got)
	}
}
