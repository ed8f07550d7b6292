package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/agentctl"
	"github.com/mqagent/mqagent/pkg/protocol"
	"github.com/mqagent/mqagent/pkg/transport"
	"github.com/mqagent/mqagent/pkg/update"
)

// UninstallFile records an accepted agent.uninstall in the data directory
// until it has been carried out.
const UninstallFile = "uninstall.json"

// PendingUninstall is a recorded agent.uninstall.
type PendingUninstall struct {
	ID    string `json:"id"`
	Purge bool   `json:"purge"`
}

// ReadUninstall returns the agent.uninstall recorded in dataDir, if any:
// the agent must carry it out instead of running.
func ReadUninstall(dataDir string) (PendingUninstall, bool, error) {
	var p PendingUninstall
	b, err := os.ReadFile(filepath.Join(dataDir, UninstallFile))
	if errors.Is(err, fs.ErrNotExist) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("uninstall record: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, false, fmt.Errorf("uninstall record: %w", err)
	}
	return p, true, nil
}

// selfControlHandlers adds agent.update (with o.Update) and
// agent.uninstall (with o.Uninstall) to handlers.
func selfControlHandlers(o Options, handlers map[string]dispatch.Handler, request func(string)) {
	if o.Update != nil {
		handlers[protocol.KindAgentUpdate] = agentctl.Update{Updater: o.Update, Version: o.Version, AllowHTTP: o.Config.Dev, Request: request}
	}
	if o.Uninstall {
		handlers[protocol.KindAgentUninstall] = agentctl.Uninstall{Request: request, Prepare: func(id string, purge bool) error {
			if o.Update != nil {
				if st, ok, err := o.Update.Pending(); err == nil && ok && !st.Phase.Final() {
					return fmt.Errorf("an update (%s, phase %s) is in progress", st.ID, st.Phase)
				}
			}
			b, _ := json.Marshal(PendingUninstall{ID: id, Purge: purge})
			return update.WriteFileSync(filepath.Join(o.Config.DataDir, UninstallFile), b, 0o600)
		}}
	}
}

// updateSettle is how long the new version must stay connected before it
// confirms an update (at most a quarter of the health timeout).
const updateSettle = 2 * time.Second

// startSelfControl ends an update left by the previous process: one that
// has ended (confirmed, rolled back, failed) gets its final result now;
// when this process is the new version of a swapped update, it confirms
// the update once connected (and still connected after a short settle),
// or gives up at the health timeout and stops with reason update so that
// the caller restores the previous binary. The returned func stops the
// watch. It runs before the pipeline recovers the journal, so a final
// result written here is not taken for an interrupted command.
func startSelfControl(o Options, disp *dispatch.Dispatcher, client *transport.Client, started time.Time, request func(string), log *slog.Logger) (stop func()) {
	m := o.Update
	if m == nil {
		return func() {}
	}
	log = log.With("component", "update")
	st, ok, err := m.Pending()
	if err != nil {
		log.Error("cannot read the update state", "err", err)
		return func() {}
	}
	if !ok {
		return func() {}
	}
	if st.Phase.Final() {
		finishUpdate(m, disp, st, log)
		return func() {}
	}
	if st.Phase != update.PhaseSwapped || st.To != o.Version {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		timeout := m.HealthTimeout
		if t := st.HealthTimeout(); t > 0 {
			timeout = t
		}
		deadline := time.NewTimer(time.Until(started.Add(timeout)))
		defer deadline.Stop()
		settle := min(updateSettle, timeout/4)
		for {
			select {
			case <-ctx.Done():
				return
			case <-deadline.C:
				reason := fmt.Sprintf("version %s did not come online within %s", st.To, timeout)
				if gave, err := m.GiveUp(reason); err != nil {
					log.Error("cannot give up the update", "err", err)
				} else if gave {
					log.Error("update failed: rolling back", "id", st.ID, "reason", reason)
					request(protocol.ReasonUpdate)
				}
				return
			case <-client.Connected():
			}
			t := time.NewTimer(settle)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if !client.State().Connected {
				continue
			}
			cst, ok, err := m.Confirm()
			if err != nil {
				log.Error("cannot confirm the update", "err", err)
				continue
			}
			if ok {
				finishUpdate(m, disp, cst, log)
			}
			return
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// finishUpdate publishes the final result of an ended update and removes
// its state.
func finishUpdate(m *update.Manager, disp *dispatch.Dispatcher, st update.State, log *slog.Logger) {
	data, errText := update.Outcome(st)
	out := dispatch.Outcome{Data: data, Error: errText}
	if errText != "" {
		out.State = protocol.StateFailed
	}
	if err := disp.Complete(st.ID, out); err != nil {
		if !errors.Is(err, dispatch.ErrNotRunning) {
			log.Error("cannot publish the update's result", "id", st.ID, "err", err)
			return
		}
		log.Warn("update's command not in the journal", "id", st.ID, "err", err)
	}
	log.Info("update ended", "id", st.ID, "from", st.From, "to", st.To, "phase", st.Phase, "error", errText)
	if err := m.Finish(st.ID); err != nil {
		log.Error("cannot clear the update state", "err", err)
	}
}

// clearRetained publishes empty retained messages on the host's status
// and inventory topics (after agent.uninstall), so that the host
// disappears from dashboards.
func clearRetained(client *transport.Client, topics protocol.Topics, host string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, t := range []string{topics.Inventory(host), topics.Status(host)} {
		if err := client.PublishWait(ctx, t, 1, true, nil); err != nil {
			log.Warn("cannot clear a retained message", "topic", t, "err", err)
		}
	}
}
