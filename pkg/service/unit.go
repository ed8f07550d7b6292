package service

import (
	"path/filepath"
	"runtime"
	"strings"
)

// systemdUnit is the unit template; @EXEC@ and @EXE@ are replaced.
const systemdUnit = `# mqagent host agent: the unit ` + "`mqagent service install --config FILE`" + ` writes (it
# overwrites edits). By hand: copy it to /etc/systemd/system/, then
#   systemctl daemon-reload && systemctl enable --now mqagent
#
# The agent runs operators' commands as root by design, and every sandboxing
# option of a unit also applies to the commands it runs (they are its
# children). So this unit protects the agent's operation without sandboxing
# it. Deliberately not set, and why:
#   NoNewPrivileges=          commands could no longer use sudo, su or setuid helpers
#   ProtectSystem=, ProtectHome=, ReadOnlyPaths=, PrivateTmp=
#                             commands must change the real system and see the real /tmp
#   PrivateDevices=, ProtectKernelTunables=, ProtectKernelModules=, ProtectClock=,
#   ProtectControlGroups=     admin commands (mount, sysctl, modprobe, timedatectl) need them
#   CapabilityBoundingSet=, SystemCallFilter=, RestrictNamespaces=, MemoryDenyWriteExecute=
#                             would break ordinary admin tools (containers, debuggers, JITs)
#   OOMScoreAdjust=           commands would inherit it
# The agent's own files are private without them: it creates its data
# directory 0700 and its state, audit and log files 0600.
[Unit]
Description=mqagent host agent (commands and telemetry over MQTT)
Documentation=https://github.com/mqagent/mqagent
Wants=network-online.target
After=network-online.target
# A crash loop stops after 10 failed starts in 5 minutes.
StartLimitIntervalSec=300
StartLimitBurst=10
ConditionFileIsExecutable=@EXE@

[Service]
Type=simple
ExecStart=@EXEC@
# agent.stop exits 0 and stays stopped; a crash or a failed start restarts.
# agent.restart and agent.update re-execute the agent in place (same pid).
Restart=on-failure
RestartSec=5
# SIGTERM goes to the agent only: it gives running commands
# exec.grace_period (10 s), stops each command's process group, flushes its
# outbox, publishes its offline status and exits 0. What is left of the
# unit gets SIGKILL after TimeoutStopSec.
KillMode=mixed
TimeoutStopSec=30
# Commands get the usual umask; the agent sets its own files' modes.
UMask=0022
LimitNOFILE=65536
# Never stdout. stderr carries errors only, with sd-daemon <3> prefixes, to
# the journal; the full log is the rotating file (log.file, default
# data_dir/mqagent.log).
StandardOutput=null
StandardError=journal
SyslogIdentifier=mqagent

[Install]
WantedBy=multi-user.target
`

// SystemdUnit is the systemd unit that runs spec.
func SystemdUnit(spec Spec) string {
	exec := systemdQuote(spec.Exe)
	for _, a := range spec.Args() {
		exec += " " + systemdQuote(a)
	}
	r := strings.NewReplacer("@EXEC@", exec, "@EXE@", strings.ReplaceAll(spec.Exe, "%", "%%"))
	return r.Replace(systemdUnit)
}

// systemdQuote quotes one word of a unit's command line: specifiers (%)
// and variables ($) are escaped, and a word with other than plain
// characters is double-quoted.
func systemdQuote(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	plain := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/._-+,:=@%$", c)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// launchdPlist is the launchd job template.
const launchdPlist = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- mqagent host agent: the launchd daemon ` + "`mqagent service install`" + ` writes
     (it overwrites edits). By hand: copy it to /Library/LaunchDaemons/mqagent.plist, then
     launchctl load -w /Library/LaunchDaemons/mqagent.plist -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>@LABEL@</string>
	<key>ProgramArguments</key>
	<array>
@ARGS@	</array>
	<key>RunAtLoad</key>
	<true/>
	<!-- Restart after a crash or a failed start; agent.stop exits 0 and stays stopped. -->
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>5</integer>
	<!-- SIGTERM is a graceful stop (grace period for commands, offline status). -->
	<key>ExitTimeOut</key>
	<integer>30</integer>
	<!-- Never stdout; stderr carries errors only; the full log is the rotating file. -->
	<key>StandardOutPath</key>
	<string>/dev/null</string>
	<key>StandardErrorPath</key>
	<string>/var/log/mqagent.err.log</string>
</dict>
</plist>
`

// LaunchdPlist is the launchd daemon definition that runs spec.
func LaunchdPlist(spec Spec) string {
	var args strings.Builder
	for _, a := range append([]string{spec.Exe}, spec.Args()...) {
		args.WriteString("\t\t<string>" + xmlEscape(a) + "</string>\n")
	}
	return strings.NewReplacer("@LABEL@", Name, "@ARGS@", args.String()).Replace(launchdPlist)
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace(s)
}

// samePath compares two executable paths (case-insensitively on Windows
// and macOS, after resolving symbolic links where possible).
func samePath(a, b string) bool {
	clean := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return filepath.Clean(p)
	}
	a, b = clean(a), clean(b)
	if runtime.GOOS == "windows" || runtime.GOOS == "darwin" {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// execStartExe is the executable of a unit's ExecStart= line.
func execStartExe(unit string) (string, bool) {
	for _, line := range strings.Split(unit, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart=")
		if !ok {
			continue
		}
		v = strings.TrimLeft(v, "-@:+!")
		if strings.HasPrefix(v, `"`) {
			var b strings.Builder
			for i := 1; i < len(v); i++ {
				switch v[i] {
				case '\\':
					if i+1 < len(v) {
						i++
						b.WriteByte(v[i])
					}
				case '"':
					return unescapeSpecifiers(b.String()), true
				default:
					b.WriteByte(v[i])
				}
			}
			return "", false
		}
		exe, _, _ := strings.Cut(v, " ")
		return unescapeSpecifiers(exe), exe != ""
	}
	return "", false
}

func unescapeSpecifiers(s string) string {
	return strings.NewReplacer("%%", "%", "$$", "$").Replace(s)
}

// plistExe is the first ProgramArguments string of a launchd plist.
func plistExe(plist string) (string, bool) {
	_, rest, ok := strings.Cut(plist, "<key>ProgramArguments</key>")
	if !ok {
		return "", false
	}
	_, rest, ok = strings.Cut(rest, "<string>")
	if !ok {
		return "", false
	}
	v, _, ok := strings.Cut(rest, "</string>")
	if !ok {
		return "", false
	}
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&quot;", `"`, "&apos;", "'", "&amp;", "&").Replace(v), true
}
