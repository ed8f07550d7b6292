//go:build !linux && !darwin && !windows

package service

func newBackend(spec Spec) (backend, error) { return newKardianos(spec, "", nil) }
