package service

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestJournalErrorHandler(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&lineWriter{w: journalWriter(&buf)}, &slog.HandlerOptions{Level: slog.LevelError})
	log := slog.New(h)
	log.Info("routine")
	log.Error("broker refused the connection", "err", "not authorized")
	got := buf.String()
	if strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "<3>") || !strings.Contains(got, `msg="broker refused the connection" err="not authorized"`) {
		t.Fatalf("journal output %q", got)
	}
	if h, _ := ErrorHandler(""); h != nil {
		t.Fatal("a foreground process got a system log handler")
	}
}

func TestManagedInTests(t *testing.T) {
	if m := Managed(); m != "" {
		t.Fatalf("Managed() = %q for a test process", m)
	}
}
