package dashboard

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/mqagent/mqagent/pkg/client"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// maxCommandTimeout bounds the run time a browser may ask for.
const maxCommandTimeout = time.Hour

// CommandRequest is the body of POST /api/hosts/{id}/commands.
type CommandRequest struct {
	// Kind is ping, exec, shell or inventory.
	Kind string `json:"kind"`
	// Command is the command line of a shell command.
	Command string `json:"command,omitempty"`
	// Argv is the program and arguments of an exec command.
	Argv []string `json:"argv,omitempty"`
	// TimeoutS is the run time limit in seconds (0: the default).
	TimeoutS int `json:"timeout_s,omitempty"`
}

// command builds the protocol command of a request.
func (req *CommandRequest) command(defTimeout time.Duration) (protocol.Command, string) {
	cmd := protocol.Command{Kind: req.Kind}
	switch req.Kind {
	case protocol.KindPing, protocol.KindInventory:
		if req.Command != "" || len(req.Argv) > 0 {
			return cmd, req.Kind + " takes no command"
		}
	case protocol.KindShell:
		if strings.TrimSpace(req.Command) == "" || len(req.Argv) > 0 {
			return cmd, "shell: give a command line"
		}
		cmd.Args, _ = json.Marshal(protocol.ShellArgs{Command: req.Command})
	case protocol.KindExec:
		if len(req.Argv) == 0 || req.Argv[0] == "" || req.Command != "" {
			return cmd, "exec: give argv (the program first)"
		}
		cmd.Args, _ = json.Marshal(protocol.ExecArgs{Argv: req.Argv})
	default:
		return cmd, "kind: want ping, exec, shell or inventory"
	}
	timeout := defTimeout
	if req.TimeoutS < 0 || time.Duration(req.TimeoutS)*time.Second > maxCommandTimeout {
		return cmd, "timeout_s: between 0 and 3600"
	}
	if req.TimeoutS > 0 {
		timeout = time.Duration(req.TimeoutS) * time.Second
	}
	cmd.TimeoutMS = timeout.Milliseconds()
	return cmd, ""
}

// CommandAccepted is the answer to a command sent.
type CommandAccepted struct {
	ID string `json:"id"` // the command id
}

func (s *Server) postCommand(w http.ResponseWriter, r *http.Request) {
	if !s.CanRun() {
		httpError(w, http.StatusForbidden, "this dashboard is read-only (no signing key or no users configured)")
		return
	}
	sess, _ := s.auth.session(r)
	if sess == nil {
		httpError(w, http.StatusUnauthorized, "sign in first")
		return
	}
	if !sameOrigin(r) || !csrfOK(r, sess) {
		httpError(w, http.StatusForbidden, "missing or wrong CSRF token")
		return
	}
	host := r.PathValue("id")
	if !protocol.ValidHostID(host) {
		httpError(w, http.StatusBadRequest, "invalid host id")
		return
	}
	var req CommandRequest
	if err := decodeJSON(r, 64<<10, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	cmd, problem := req.command(s.o.CommandTimeout)
	if problem != "" {
		httpError(w, http.StatusBadRequest, problem)
		return
	}
	cmd.ID, cmd.Target, cmd.Operator, cmd.IssuedAt = client.NewID(), "host:"+host, sess.user, protocol.Now()
	cmd.V = protocol.Version
	// Followed for the run time plus a margin for the queue and the
	// broker; the global results subscription keeps recording after.
	ctx, cancel := context.WithTimeout(s.life, time.Duration(cmd.TimeoutMS)*time.Millisecond+2*time.Minute)
	events, err := s.o.Sender.Send(ctx, cmd, s.o.Signer)
	if err != nil {
		cancel()
		s.log.Warn("dashboard command not sent", "user", sess.user, "host", host, "kind", cmd.Kind, "err", err)
		httpError(w, http.StatusBadGateway, "not sent: "+err.Error())
		return
	}
	s.activity.sent(host, &cmd)
	s.log.Info("dashboard command sent", "user", sess.user, "host", host, "kind", cmd.Kind, "id", cmd.ID)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		for ev := range events {
			switch {
			case ev.Result != nil && ev.Result.Host == host && ev.Result.ID == cmd.ID:
				s.activity.addResult(host, ev.Result)
				if protocol.IsFinal(ev.Result.State) {
					cancel() // the channel closes; drain it
				}
			case ev.Chunk != nil && ev.Chunk.Host == host && ev.Chunk.ID == cmd.ID:
				s.activity.addChunk(host, ev.Chunk)
			}
		}
	}()
	writeJSON(w, http.StatusAccepted, CommandAccepted{ID: cmd.ID})
}
