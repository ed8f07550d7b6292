package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// benchPayloads are typical and large commands, bare and signed.
func benchPayloads() []struct {
	name    string
	payload []byte
} {
	script := cmdWith(func(m map[string]any) {
		m["kind"] = "script"
		m["args"] = map[string]any{"content": strings.Repeat("echo hello world; ", 64<<10/18), "interpreter": "sh"}
	})
	manyEnv := cmdWith(func(m map[string]any) {
		env := map[string]string{}
		for i := range 200 {
			env["VAR_"+strings.Repeat("X", i%7)+string(rune('A'+i%26))+strings.Repeat("0", i/26)] = "value"
		}
		m["args"] = map[string]any{"argv": []string{"env"}, "env": env}
	})
	return []struct {
		name    string
		payload []byte
	}{
		{"bare", cmdWith(nil)},
		{"signed", signed(cmdWith(nil), "ops")},
		{"bare-64KiB-script", script},
		{"bare-200-env", manyEnv},
	}
}

// BenchmarkDecode measures Decode on typical and large commands; the
// strict key checks are part of it.
func BenchmarkDecode(b *testing.B) {
	for _, p := range benchPayloads() {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(p.payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := protocol.Decode(p.payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnmarshalOnly is the floor: one json.Unmarshal of the payload
// into a map of raw fields, which any decoder has to do.
func BenchmarkUnmarshalOnly(b *testing.B) {
	for _, p := range benchPayloads() {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(p.payload)))
			b.ReportAllocs()
			for b.Loop() {
				var m map[string]json.RawMessage
				if err := json.Unmarshal(p.payload, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
