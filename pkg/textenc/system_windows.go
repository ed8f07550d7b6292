package textenc

import "golang.org/x/sys/windows"

var (
	kernel32               = windows.NewLazySystemDLL("kernel32.dll")
	procGetConsoleOutputCP = kernel32.NewProc("GetConsoleOutputCP")
	procGetOEMCP           = kernel32.NewProc("GetOEMCP")
	procGetACP             = kernel32.NewProc("GetACP")
)

// SystemPriors returns the encodings a command's output most likely uses,
// most likely first: the console output code page (when the agent has a
// console), the OEM code page (what console programs write; children get a
// console of their own) and the ANSI code page. UTF-8 and unknown code pages
// are left out. getenv is not used on Windows.
func SystemPriors(func(string) string) []Encoding {
	var out []Encoding
	for _, p := range []*windows.LazyProc{procGetConsoleOutputCP, procGetOEMCP, procGetACP} {
		if p.Find() != nil {
			continue
		}
		cp, _, _ := p.Call()
		out = appendPrior(out, uint32(cp))
	}
	return out
}
