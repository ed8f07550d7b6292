// Package logging builds the agent's structured logger: log/slog writing
// text or JSON to stderr or to a size-rotated file (lumberjack), plus an
// adapter that routes paho.mqtt.golang's log lines into it.
//
// The package keeps no global state: callers inject the returned
// *slog.Logger wherever it is needed, and main sets paho's package loggers
// once with Paho.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Defaults used when Options leaves a size field at zero.
const (
	DefaultMaxSizeMB  = 20
	DefaultMaxBackups = 5
)

// File and directory modes of the log file.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// ErrLevel is wrapped by the error of an unknown level name.
var ErrLevel = errors.New("unknown log level")

// Options for New.
type Options struct {
	// Level is the minimum level logged: debug, info, warn or error
	// (case-insensitive). "" means info.
	Level string
	// File is the log file, rotated by size. "" logs to Stderr.
	File string
	// MaxSizeMB is the size in megabytes at which File is rotated;
	// 0 means DefaultMaxSizeMB.
	MaxSizeMB int
	// MaxBackups is how many rotated files are kept; 0 means
	// DefaultMaxBackups.
	MaxBackups int
	// Stderr is where to log when File is ""; nil means os.Stderr. When the
	// agent runs as a service the caller passes a File instead: this package
	// never writes to stdout.
	Stderr io.Writer
	// JSON selects the JSON handler instead of the text handler.
	JSON bool
}

// ParseLevel parses a level name: debug, info, warn or error
// (case-insensitive); "" is info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%w %q (want debug, info, warn or error)", ErrLevel, s)
}

// New returns a logger configured by o and a closer that flushes and closes
// the log file (a no-op when logging to Stderr). The file is created at once
// with mode 0600 (an existing one is set to 0600), its directory with 0700,
// so a path that cannot be written is reported here rather than lost later.
func New(o Options) (*slog.Logger, io.Closer, error) {
	level, err := ParseLevel(o.Level)
	if err != nil {
		return nil, nil, err
	}
	if o.MaxSizeMB < 0 {
		return nil, nil, fmt.Errorf("log max size %d MB: must not be negative", o.MaxSizeMB)
	}
	if o.MaxBackups < 0 {
		return nil, nil, fmt.Errorf("log max backups %d: must not be negative", o.MaxBackups)
	}
	var (
		w      io.Writer
		closer io.Closer = nopCloser{}
	)
	if o.File == "" {
		w = o.Stderr
		if w == nil {
			w = os.Stderr
		}
	} else {
		lj, err := openFile(o)
		if err != nil {
			return nil, nil, err
		}
		w, closer = lj, lj
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if o.JSON {
		h = slog.NewJSONHandler(w, hopts)
	} else {
		h = slog.NewTextHandler(w, hopts)
	}
	return slog.New(h), closer, nil
}

// openFile prepares o.File (directory 0700, file 0600) and returns the
// rotating writer for it.
func openFile(o Options) (*lumberjack.Logger, error) {
	path, err := filepath.Abs(o.File)
	if err != nil {
		return nil, fmt.Errorf("log file %s: %w", o.File, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, fileMode)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	// An existing file keeps its mode on open; lumberjack copies that mode
	// to every new file after rotation, so tighten it now.
	chmodErr := f.Chmod(fileMode)
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	if chmodErr != nil && !errors.Is(chmodErr, errors.ErrUnsupported) {
		return nil, fmt.Errorf("log file: %w", chmodErr)
	}
	size, backups := o.MaxSizeMB, o.MaxBackups
	if size == 0 {
		size = DefaultMaxSizeMB
	}
	if backups == 0 {
		backups = DefaultMaxBackups
	}
	return &lumberjack.Logger{Filename: path, MaxSize: size, MaxBackups: backups}, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// PahoLogger is paho.mqtt.golang's Logger interface (mqtt.Logger).
type PahoLogger interface {
	Println(v ...interface{})
	Printf(format string, v ...interface{})
}

// Paho adapts l to paho.mqtt.golang's Logger interface: every line is
// logged at level with the attribute component=paho. A nil l discards.
func Paho(l *slog.Logger, level slog.Level) PahoLogger {
	if l == nil {
		l = Discard()
	}
	return pahoLogger{l: l.With("component", "paho"), level: level}
}

type pahoLogger struct {
	l     *slog.Logger
	level slog.Level
}

func (p pahoLogger) Println(v ...interface{}) {
	if !p.l.Enabled(context.Background(), p.level) {
		return
	}
	p.log(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

func (p pahoLogger) Printf(format string, v ...interface{}) {
	if !p.l.Enabled(context.Background(), p.level) {
		return
	}
	p.log(strings.TrimSuffix(fmt.Sprintf(format, v...), "\n"))
}

// pahoNoReconnect is what paho logs at ERROR on every lost connection
// when its own reconnect is off, as the agent's is (pkg/transport
// reconnects itself): expected, so it is logged at debug level.
const pahoNoReconnect = "reconnection function is nil"

func (p pahoLogger) log(msg string) {
	level := p.level
	if strings.Contains(msg, pahoNoReconnect) {
		level = slog.LevelDebug
	}
	p.l.Log(context.Background(), level, msg)
}

// Discard returns a logger that drops everything (for tests and defaults).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
