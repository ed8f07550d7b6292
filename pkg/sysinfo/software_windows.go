package sysinfo

import (
	"context"
	"errors"

	"golang.org/x/sys/windows/registry"
)

// uninstallKeys are where installers register what they installed, for
// 64-bit and 32-bit programs.
var uninstallKeys = []string{
	`SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall`,
	`SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall`,
}

// Software implements Describer: the machine's uninstall registry keys,
// as "Apps & features" lists them (entries with a DisplayName that are
// neither system components nor updates of another entry).
func (s *System) Software(ctx context.Context) ([]Package, error) {
	var out []Package
	var errs []error
	for _, path := range uninstallKeys {
		k, err := registry.OpenKey(registry.LOCAL_MACHINE, path, registry.ENUMERATE_SUB_KEYS|registry.QUERY_VALUE)
		if err != nil {
			if !errors.Is(err, registry.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		names, err := k.ReadSubKeyNames(-1)
		if err != nil {
			errs = append(errs, err)
		}
		for _, name := range names {
			if ctx.Err() != nil || len(out) >= maxPackages {
				break
			}
			if p, ok := uninstallEntry(k, name); ok {
				out = append(out, p)
			}
		}
		k.Close()
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, ctx.Err()
}

func uninstallEntry(parent registry.Key, name string) (Package, bool) {
	k, err := registry.OpenKey(parent, name, registry.QUERY_VALUE)
	if err != nil {
		return Package{}, false
	}
	defer k.Close()
	display, _, err := k.GetStringValue("DisplayName")
	if err != nil || display == "" {
		return Package{}, false
	}
	if v, _, err := k.GetIntegerValue("SystemComponent"); err == nil && v == 1 {
		return Package{}, false
	}
	if _, _, err := k.GetStringValue("ParentKeyName"); err == nil {
		return Package{}, false // an update of another entry
	}
	version, _, _ := k.GetStringValue("DisplayVersion")
	return Package{Name: display, Version: version}, true
}
