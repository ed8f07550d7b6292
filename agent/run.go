package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"

	"github.com/mqagent/mqagent/pkg/config"
	"github.com/mqagent/mqagent/pkg/daemon"
	"github.com/mqagent/mqagent/pkg/logging"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/service"
	"github.com/mqagent/mqagent/pkg/update"
)

// CrashFile is where fatal errors and unhandled panics are copied, in the
// data directory (debug.SetCrashOutput).
const CrashFile = "crash.log"

func runCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent in the foreground (or as the service the service manager started)",
		Long: "Run the agent until SIGTERM or SIGINT, which stop it gracefully (exit status 0).\n" +
			"In the foreground logs go to stderr unless log.file is set. Started by a service manager\n" +
			"(systemd, launchd, the Windows SCM) it logs to a rotating file (log.file, default\n" +
			"data_dir/mqagent.log), copies errors to the journal or the Event Log, and never writes to stdout.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			return runMain(cmd.Context(), cfg)
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", envDefault("MQAGENT_CONFIG", ""), "config file (env MQAGENT_CONFIG)")
	_ = c.MarkFlagRequired("config")
	return c
}

// agentRun is one `mqagent run`: the process's identity and what it runs
// with, from start to exit, restart or removal.
type agentRun struct {
	cfg      *config.Config
	exe      string // resolved at start: the file may be renamed later
	managed  string // service manager kind, "" in the foreground
	log      *slog.Logger
	closeLog func()
	upd      *update.Manager
}

// runMain runs the agent and then does what it stopped for: exit,
// restart (in place), hand over to a new version, roll back, uninstall.
func runMain(parent context.Context, cfg *config.Config) error {
	exe, err := executable()
	if err != nil {
		return err
	}
	r := &agentRun{cfg: cfg, exe: exe, managed: service.Managed()}
	if os.Getenv("GOGC") == "" {
		// A small heap between collections: the agent's live heap is a few
		// MiB and its allocation rate low, so collecting at +50% instead of
		// +100% costs little CPU and about 1 MiB less resident memory
		// (docs/telemetry.md). GOGC in the environment still wins.
		debug.SetGCPercent(50)
	}
	if err := r.openLog(); err != nil {
		return err
	}
	defer r.closeLog()
	setPahoLoggers(r.log)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if f, err := os.OpenFile(filepath.Join(cfg.DataDir, CrashFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		_ = debug.SetCrashOutput(f, debug.CrashOptions{})
		f.Close()
	}
	if p, ok, err := daemon.ReadUninstall(cfg.DataDir); err != nil {
		r.log.Error("cannot read the uninstall record", "err", err)
	} else if ok {
		r.log.Warn("an accepted agent.uninstall was not carried out: uninstalling now", "id", p.ID)
		return r.uninstall(p)
	}
	r.upd, err = newUpdater(cfg, exe, r.managed, r.log)
	if err != nil {
		return err
	}
	if act, err := r.upd.Boot(); err != nil {
		r.log.Error("update state", "err", err)
	} else if act == update.Restart {
		r.log.Warn("starting the restored previous version")
		return r.restart()
	}

	var reason string
	err = service.Run(parent, func(ctx context.Context) error {
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
		defer stop()
		var err error
		reason, err = daemon.RunUntil(ctx, daemon.Options{Config: cfg, Version: version, Logger: r.log, Update: r.upd, Uninstall: true})
		return err
	})
	if err != nil {
		r.log.Error("agent failed", "err", err)
		return err
	}
	switch reason {
	case protocol.ReasonRestart:
		r.log.Info("restarting")
		return r.restart()
	case protocol.ReasonUpdate:
		return r.afterUpdate()
	case protocol.ReasonUninstall:
		p, ok, err := daemon.ReadUninstall(cfg.DataDir)
		if err != nil || !ok {
			return fmt.Errorf("uninstall: the uninstall record is gone (%v)", err)
		}
		return r.uninstall(p)
	}
	return nil
}

// openLog opens the agent's log: stderr (or log.file) in the foreground;
// under a service manager the rotating file plus errors to the system
// log, never stdout.
func (r *agentRun) openLog() error {
	o := logging.Options{Level: r.cfg.Log.Level, File: r.cfg.Log.File, MaxSizeMB: r.cfg.Log.MaxSizeMB, MaxBackups: r.cfg.Log.MaxBackups, Stderr: os.Stderr}
	if r.managed != "" {
		o.File, o.Stderr = r.cfg.ServiceLogFile(), io.Discard
	}
	log, closer, err := logging.New(o)
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	r.log, r.closeLog = log, func() { closer.Close() }
	if h, closeSys := service.ErrorHandler(r.managed); h != nil {
		r.log = slog.New(slog.NewMultiHandler(log.Handler(), h))
		r.closeLog = func() {
			closer.Close()
			_ = closeSys()
		}
	}
	return nil
}

// newUpdater is the update manager of this agent installation.
func newUpdater(cfg *config.Config, exe, managed string, log *slog.Logger) (*update.Manager, error) {
	m := &update.Manager{
		Dir: filepath.Join(cfg.DataDir, "update"), Exe: exe, Version: version,
		MaxBytes: cfg.Update.MaxBytes, HealthTimeout: cfg.Update.HealthTimeout.D(),
		AllowHTTP: cfg.Dev, Service: managed, Args: os.Args, Logger: log.With("component", "update"),
	}
	if cfg.Update.PublicKey != "" {
		k, err := config.ParseKey(cfg.Update.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("update.public_key: %w", err)
		}
		m.PublicKey = k
	}
	return m, nil
}

// afterUpdate runs once the agent stopped for an update: the previous
// version hands over to the new one (with a watchdog run from the previous
// binary), or the new version that did not come online restores the
// previous binary and starts it.
func (r *agentRun) afterUpdate() error {
	m := r.upd
	st, ok, err := m.Pending()
	if err != nil || !ok || st.Phase != update.PhaseSwapped || st.From != version {
		return r.rollbackOrRestart(err)
	}
	switch {
	case r.managed == service.ManagerWindows:
		// The SCM starts the new version once this process is gone: the
		// watchdog asks it to, then watches.
		if st, _, err = m.HandOver(update.SelfProc(), true); err != nil {
			return err
		}
		_, err = m.SpawnWatchdog(st, nil, nil)
		return err
	case runtime.GOOS == "windows":
		// No exec in place: start the new version, then watch that process.
		r.closeLog()
		r.closeLog = func() {}
		child, err := restartProcess(r.exe)
		if err != nil {
			return err
		}
		if st, _, err = m.HandOver(child, false); err != nil {
			return err
		}
		_, err = m.SpawnWatchdog(st, os.Stdout, os.Stderr)
		return err
	}
	if st, _, err = m.HandOver(update.SelfProc(), false); err != nil {
		r.log.Error("update state", "err", err)
	}
	if _, err := m.SpawnWatchdog(st, os.Stdout, os.Stderr); err != nil {
		r.log.Error("update watchdog not started: a new version that does not start will not be rolled back until the agent starts again", "err", err)
	}
	r.log.Info("starting the new version", "from", st.From, "to", st.To)
	return r.restart()
}

// rollbackOrRestart: this process is the new version that gave up (its
// update is rolling back): restore the previous binary and start it.
func (r *agentRun) rollbackOrRestart(err error) error {
	if err != nil {
		r.log.Error("update state", "err", err)
	}
	act, err := r.upd.Rollback()
	if err != nil {
		r.log.Error("cannot restore the previous version", "err", err)
	}
	if act == update.Restart {
		r.log.Warn("starting the restored previous version")
	}
	return r.restart()
}

// restart starts the agent again from its executable: in place (Unix),
// as a new process (Windows foreground), or through the Service Control
// Manager once this process has exited (Windows service).
func (r *agentRun) restart() error {
	r.closeLog()
	r.closeLog = func() {}
	if r.managed == service.ManagerWindows {
		return startServiceAfterExit(r.exe)
	}
	_, err := restartProcess(r.exe)
	return err
}

// uninstall removes this installation: the binary and the update
// leftovers, with purge the data directory and the log files, and last
// the service when it runs this executable.
func (r *agentRun) uninstall(p daemon.PendingUninstall) error {
	log := r.log
	m, err := service.New(service.Spec{})
	own := false
	if err == nil {
		if own, err = m.InstalledFor(r.exe); err != nil {
			log.Warn("cannot tell whether the service runs this agent", "err", err)
		}
	}
	logFile := r.cfg.Log.File
	if r.managed != "" {
		logFile = r.cfg.ServiceLogFile()
	}
	log.Info("uninstalling", "exe", r.exe, "purge", p.Purge, "service", own)
	// The log file and the crash file are closed before they are removed
	// (Windows cannot delete open files); from here on errors go to stderr
	// and the system log only.
	r.closeLog()
	r.closeLog = func() {}
	_ = debug.SetCrashOutput(nil, debug.CrashOptions{})
	log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if r.managed != "" {
		log = slog.New(slog.DiscardHandler)
		if h, closeSys := service.ErrorHandler(r.managed); h != nil {
			log = slog.New(h)
			defer closeSys()
		}
	}
	rm := service.Removal{
		Exe: r.exe, Leftovers: []string{update.BackupPath(r.exe), update.StagedPath(r.exe)},
		Purge: p.Purge, DataDir: r.cfg.DataDir, LogFile: logFile,
	}
	var errs []error
	if err := service.Remove(rm); err != nil {
		errs = append(errs, err)
	}
	if !p.Purge {
		// Done: a reinstall with the same data directory must not
		// uninstall itself again.
		if err := os.Remove(filepath.Join(r.cfg.DataDir, daemon.UninstallFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if own {
		if err := m.Uninstall(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("uninstall incomplete", "err", err)
		return err
	}
	return nil
}

// runAgent runs the agent until SIGTERM/SIGINT, ctx ends, or an
// agent.stop/agent.restart command; it returns the offline reason. It is
// the development mode's agent (`mqagent dev`): no self-update, no
// uninstall.
func runAgent(parent context.Context, cfg *config.Config, stderr io.Writer) (string, error) {
	log, closer, err := logging.New(logging.Options{
		Level: cfg.Log.Level, File: cfg.Log.File, MaxSizeMB: cfg.Log.MaxSizeMB, MaxBackups: cfg.Log.MaxBackups, Stderr: stderr,
	})
	if err != nil {
		return "", fmt.Errorf("log: %w", err)
	}
	defer closer.Close()
	setPahoLoggers(log)
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, os.Interrupt)
	defer stop()
	reason, err := daemon.RunUntil(ctx, daemon.Options{Config: cfg, Version: version, Logger: log})
	if err != nil {
		log.Error("agent failed", "err", err)
		return reason, err
	}
	if reason == protocol.ReasonRestart {
		log.Info("restarting")
	}
	return reason, nil
}

// restartSelf restarts the development agent (`mqagent dev`).
func restartSelf() error {
	exe, err := executable()
	if err != nil {
		return err
	}
	_, err = restartProcess(exe)
	return err
}

// executable is this process's executable, symbolic links resolved.
func executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("executable: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return exe, nil
}

// setPahoLoggers routes paho's own warnings and errors to our log. Set
// once here, in main: paho's loggers are package globals.
func setPahoLoggers(log *slog.Logger) {
	if _, ok := mqtt.ERROR.(mqtt.NOOPLogger); !ok {
		return // set already: mqagent dev sets them before its dashboard's client starts
	}
	l := log
	mqtt.ERROR = logging.Paho(l, slog.LevelError)
	mqtt.CRITICAL = logging.Paho(l, slog.LevelError)
	mqtt.WARN = logging.Paho(l, slog.LevelDebug) // paho warns about routine session housekeeping
}
