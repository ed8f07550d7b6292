//go:build windows

package service

import "golang.org/x/sys/windows/svc/eventlog"

// eventID is the Event Log id of the agent's error records.
const eventID = 1

func systemLog(string) (func(string) error, func() error) {
	l, err := eventlog.Open(Name)
	if err != nil {
		return nil, nil
	}
	return func(line string) error { return l.Error(eventID, line) }, l.Close
}
