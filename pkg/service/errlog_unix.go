//go:build !windows

package service

import (
	"os"

	kservice "github.com/kardianos/service"
)

func systemLog(kind string) (func(string) error, func() error) {
	if kind == ManagerSystemd {
		return journalWriter(os.Stderr), func() error { return nil }
	}
	s, err := kservice.New(nopProgram{}, &kservice.Config{Name: Name})
	if err != nil {
		return nil, nil
	}
	l, err := s.SystemLogger(nil) // syslog
	if err != nil {
		return nil, nil
	}
	return func(line string) error { return l.Error(line) }, func() error { return nil }
}
