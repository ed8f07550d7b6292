package service

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
)

// ErrorHandler returns a handler that copies records at error level to
// the log of the service manager kind (Managed's value): the journal under
// systemd (stderr lines with the sd-daemon <3> prefix), the Windows Event
// Log for a Windows service, syslog elsewhere. It returns nil when kind is
// "" or that log cannot be opened; close releases it. Combine it with the
// file handler through slog.NewMultiHandler.
func ErrorHandler(kind string) (h slog.Handler, close func() error) {
	if kind == "" {
		return nil, nil
	}
	w, closeFn := systemLog(kind)
	if w == nil {
		return nil, nil
	}
	return slog.NewTextHandler(&lineWriter{w: w}, &slog.HandlerOptions{
		Level: slog.LevelError,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{} // the system log has its own
			}
			return a
		},
	}), closeFn
}

// lineWriter hands each record (one line) to w, without its newline.
type lineWriter struct {
	mu sync.Mutex
	w  func(line string) error
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.w(string(bytes.TrimRight(p, "\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// journalWriter writes lines to w with the sd-daemon "<3>" (error)
// priority prefix, which journald reads from a service's stderr.
func journalWriter(w io.Writer) func(string) error {
	return func(line string) error {
		_, err := io.WriteString(w, "<3>"+line+"\n")
		return err
	}
}
