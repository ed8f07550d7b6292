package swarm

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/mqagent/mqagent/pkg/dispatch"
	"github.com/mqagent/mqagent/pkg/handlers/process"
	"github.com/mqagent/mqagent/pkg/protocol"
)

// cheapExec is the exec kind without processes: the args are checked by
// the agent's own exec handler (process.Exec.Decode), then a few commands
// are answered in memory: `true` (exit 0), `false` (exit 1), `echo ARGS`
// (ARGS and a newline on stdout). Anything else ends failed, saying it is
// not simulated. It goes through the queue and a worker like a real exec
// (journaled queued, then running, then final).
type cheapExec struct{ real process.Exec }

// Decode validates the args as the agent does.
func (h cheapExec) Decode(args json.RawMessage) (any, error) { return h.real.Decode(args) }

// Summary is the real handler's summary (the argv).
func (h cheapExec) Summary(req any) string { return h.real.Summary(req) }

// Run answers the command without starting a process.
func (cheapExec) Run(ctx context.Context, call *dispatch.Call) dispatch.Outcome {
	var a protocol.ExecArgs
	if err := json.Unmarshal(call.Cmd.Args, &a); err != nil || len(a.Argv) == 0 {
		return dispatch.Outcome{Error: "simulator: unreadable exec args"}
	}
	if call.Started != nil {
		call.Started(map[string]any{"simulated": true})
	}
	code := 0
	var stdout []byte
	switch a.Argv[0] {
	case "true":
	case "false":
		code = 1
	case "echo":
		stdout = []byte(strings.Join(a.Argv[1:], " ") + "\n")
	default:
		return dispatch.Outcome{Error: "simulator: " + a.Argv[0] + " is not simulated (only true, false, echo)"}
	}
	if err := ctx.Err(); err != nil {
		return dispatch.Outcome{}
	}
	if call.Output != nil && len(stdout) > 0 {
		call.Output("stdout", stdout)
	}
	if code != 0 {
		return dispatch.Outcome{State: protocol.StateFailed, ExitCode: &code, Error: fmt.Sprintf("exit status %d", code)}
	}
	return dispatch.Outcome{State: protocol.StateSucceeded, ExitCode: &code, Stdout: stdout}
}
