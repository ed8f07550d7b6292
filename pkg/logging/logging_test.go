package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// paho accepts the adapter as its Logger.
var _ mqtt.Logger = Paho(nil, slog.LevelDebug)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"debug", slog.LevelDebug, false},
		{"INFO", slog.LevelInfo, false},
		{"", slog.LevelInfo, false},
		{"warn", slog.LevelWarn, false},
		{" error ", slog.LevelError, false},
		{"warning", 0, true},
		{"trace", 0, true},
		{"1", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrLevel) {
				t.Errorf("ParseLevel(%q) error = %v, want ErrLevel", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"level", Options{Level: "verbose"}, `unknown log level "verbose"`},
		{"size", Options{MaxSizeMB: -1}, "must not be negative"},
		{"backups", Options{MaxBackups: -2}, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.o.Stderr = &buf
			l, c, err := New(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.want)
			}
			if l != nil || c != nil {
				t.Errorf("New returned a logger or closer with an error")
			}
		})
	}
}

func TestLevelFiltering(t *testing.T) {
	tests := []struct {
		level string
		want  []string // messages expected, in order
	}{
		{"debug", []string{"d", "i", "w", "e"}},
		{"info", []string{"i", "w", "e"}},
		{"", []string{"i", "w", "e"}},
		{"warn", []string{"w", "e"}},
		{"error", []string{"e"}},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			var buf bytes.Buffer
			l, c, err := New(Options{Level: tt.level, Stderr: &buf, JSON: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			l.Debug("d")
			l.Info("i")
			l.Warn("w")
			l.Error("e")
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if line == "" {
					continue
				}
				var rec struct{ Msg string }
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("line %q is not JSON: %v", line, err)
				}
				got = append(got, rec.Msg)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("logged %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTextHandler(t *testing.T) {
	var buf bytes.Buffer
	l, _, err := New(Options{Stderr: &buf})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hello", "host", "web-01")
	if s := buf.String(); !strings.Contains(s, "level=INFO msg=hello host=web-01") {
		t.Errorf("text output %q", s)
	}
}

func TestFileModeAndRotation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub", "logs")
	path := filepath.Join(dir, "mqagent.log")
	l, c, err := New(Options{File: path, MaxSizeMB: 1, MaxBackups: 2})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("log file not created by New: %v", err)
	}
	if runtime.GOOS != "windows" {
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("file mode %o, want 600", m)
		}
		di, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if m := di.Mode().Perm(); m != 0o700 {
			t.Errorf("dir mode %o, want 700", m)
		}
	}
	// About 1.5 MB of records: the file must rotate once at 1 MB.
	payload := strings.Repeat("x", 1000)
	for i := range 1500 {
		l.Info("fill", "i", i, "p", payload)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var backups []string
	for _, e := range entries {
		if e.Name() != "mqagent.log" {
			backups = append(backups, e.Name())
		}
	}
	if len(backups) != 1 || !strings.HasPrefix(backups[0], "mqagent-") || !strings.HasSuffix(backups[0], ".log") {
		t.Fatalf("after 1.5 MB with a 1 MB limit: files besides mqagent.log = %v, want one mqagent-*.log", backups)
	}
	for _, name := range []string{"mqagent.log", backups[0]} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 1<<20 {
			t.Errorf("%s is %d bytes, over the 1 MB limit", name, fi.Size())
		}
		if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o, want 600", name, fi.Mode().Perm())
		}
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cur, []byte("i=1499 ")) {
		t.Errorf("last record not in the current file")
	}
}

func TestExistingFileTightened(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix modes")
	}
	path := filepath.Join(t.TempDir(), "a.log")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, c, err := New(Options{File: path})
	if err != nil {
		t.Fatal(err)
	}
	l.Warn("new")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "old\n") || !strings.Contains(string(b), "msg=new") {
		t.Errorf("file content %q: want old content kept and the new record appended", b)
	}
}

func TestFileUnwritable(t *testing.T) {
	// A regular file where the directory should be.
	base := filepath.Join(t.TempDir(), "notadir")
	if err := os.WriteFile(base, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := New(Options{File: filepath.Join(base, "x.log")}); err == nil {
		t.Fatal("New with a file as the log directory: want an error")
	}
}

func TestPaho(t *testing.T) {
	var buf bytes.Buffer
	l, _, err := New(Options{Level: "debug", Stderr: &buf, JSON: true})
	if err != nil {
		t.Fatal(err)
	}
	p := Paho(l, slog.LevelWarn)
	p.Println("[net]", "connection lost", 3)
	p.Printf("[client] %s %d\n", "reconnect", 2)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines: %q", len(lines), buf.String())
	}
	want := []string{"[net] connection lost 3", "[client] reconnect 2"}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["msg"] != want[i] || rec["level"] != "WARN" || rec["component"] != "paho" {
			t.Errorf("line %d = %v, want msg %q level WARN component paho", i, rec, want[i])
		}
	}

	// Below the logger's level nothing is written.
	buf.Reset()
	l2, _, err := New(Options{Level: "info", Stderr: &buf})
	if err != nil {
		t.Fatal(err)
	}
	Paho(l2, slog.LevelDebug).Printf("noise %d", 1)
	Paho(l2, slog.LevelDebug).Println("noise")
	if buf.Len() != 0 {
		t.Errorf("debug paho line logged at info level: %q", buf.String())
	}
}

func TestDiscard(t *testing.T) {
	l := Discard()
	if l.Enabled(t.Context(), slog.LevelError) {
		t.Error("Discard logger reports error level enabled")
	}
	l.Error("dropped") // must not panic
	Paho(nil, slog.LevelError).Println("dropped")
}

// paho's "reconnection function is nil" on every lost connection is
// expected with our own reconnect loop: logged at debug, not error.
func TestPahoNoReconnectIsDebug(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := Paho(l, slog.LevelError)
	p.Println("[client]  BUG BUG BUG reconnection function is nil", "x")
	p.Printf("[net] %s", "connection lost")
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG msg=\"[client]  BUG BUG BUG reconnection function is nil x\"") ||
		!strings.Contains(out, "level=ERROR msg=\"[net] connection lost\"") {
		t.Fatalf("log:\n%s", out)
	}
}
