//go:build !linux && !windows

package sysinfo

import "context"

// Software implements Describer: this platform has no package database
// the agent reads.
func (s *System) Software(context.Context) ([]Package, error) { return nil, errNoPackageDB }
