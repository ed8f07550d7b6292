package protocol

import "strings"

// Topics builds the topic names of the contract under one prefix.
type Topics struct{ Prefix string }

// HostCmd is the command topic of one host.
func (t Topics) HostCmd(host string) string { return t.Prefix + "/hosts/" + host + "/cmd" }

// GroupCmd is the command topic of a group.
func (t Topics) GroupCmd(group string) string { return t.Prefix + "/groups/" + group + "/cmd" }

// AllCmd is the broadcast command topic.
func (t Topics) AllCmd() string { return t.Prefix + "/all/cmd" }

// Status is a host's retained status topic.
func (t Topics) Status(host string) string { return t.Prefix + "/hosts/" + host + "/status" }

// Inventory is a host's retained inventory topic.
func (t Topics) Inventory(host string) string { return t.Prefix + "/hosts/" + host + "/inventory" }

// Metrics is a host's metrics topic.
func (t Topics) Metrics(host string) string { return t.Prefix + "/hosts/" + host + "/metrics" }

// Result is the topic of one command's result.
func (t Topics) Result(host, id string) string {
	return t.Prefix + "/hosts/" + host + "/results/" + id
}

// Output is the topic of one command's output chunks.
func (t Topics) Output(host, id string) string { return t.Result(host, id) + "/out" }

// Audit is a host's audit topic.
func (t Topics) Audit(host string) string { return t.Prefix + "/hosts/" + host + "/audit" }

// ResultsFilter matches the result and output chunks of one command from any
// host; an operator subscribes to it before publishing the command.
func (t Topics) ResultsFilter(id string) string { return t.Prefix + "/hosts/+/results/" + id + "/#" }

// Scope says which kind of command topic a message arrived on.
type Scope int

// Scopes of command topics.
const (
	ScopeUnknown Scope = iota
	ScopeHost
	ScopeGroup
	ScopeAll
)

// ParseCmdTopic tells which command topic topic is, and the host or group
// it names. A topic that is not a command topic under t.Prefix, or whose
// host or group level is empty, is ScopeUnknown.
func (t Topics) ParseCmdTopic(topic string) (Scope, string) {
	rest, ok := strings.CutPrefix(topic, t.Prefix+"/")
	if !ok {
		return ScopeUnknown, ""
	}
	if rest == "all/cmd" {
		return ScopeAll, ""
	}
	if name, ok := strings.CutPrefix(rest, "hosts/"); ok {
		if name, ok := strings.CutSuffix(name, "/cmd"); ok && name != "" && !strings.Contains(name, "/") {
			return ScopeHost, name
		}
	}
	if name, ok := strings.CutPrefix(rest, "groups/"); ok {
		if name, ok := strings.CutSuffix(name, "/cmd"); ok && name != "" && !strings.Contains(name, "/") {
			return ScopeGroup, name
		}
	}
	return ScopeUnknown, ""
}

// TargetFor is the `target` value that matches a command topic.
func TargetFor(scope Scope, name string) string {
	switch scope {
	case ScopeHost:
		return "host:" + name
	case ScopeGroup:
		return "group:" + name
	case ScopeAll:
		return "all"
	}
	return ""
}
