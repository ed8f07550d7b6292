package wintest

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

// WineVersion reports the Wine version when the process runs under Wine
// (ntdll.dll exports wine_get_version there and nowhere else).
func WineVersion() (string, bool) {
	p := windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version")
	if p.Find() != nil {
		return "", false
	}
	r, _, _ := p.Call()
	if r == 0 {
		return "wine", true
	}
	return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&r))), true // r points into ntdll: not Go memory
}
