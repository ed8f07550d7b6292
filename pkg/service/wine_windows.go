//go:build windows && wine

package service

// Test-only (build tag wine, never in a release): under Wine the service
// process runs in session 1, so kardianos/service takes it for a console
// program and never speaks the Service Control Manager protocol, and the
// SCM gives up on the start (error 1053). When running under Wine with the
// service's "run" argument, this flips kardianos' unexported interactive
// flag so that the whole service lifecycle can be tested under Wine.

import (
	"os"
	"slices"
	_ "unsafe" // go:linkname

	_ "github.com/kardianos/service" // initialised first: it sets interactive
	"golang.org/x/sys/windows"
)

//go:linkname kardianosInteractive github.com/kardianos/service.interactive
var kardianosInteractive bool

func init() {
	if underWine() && slices.Contains(os.Args[1:], "run") {
		kardianosInteractive = false
	}
}

// underWine reports whether ntdll.dll has wine_get_version.
func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}
