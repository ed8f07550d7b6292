//go:build race

package bench

// raceBuild: this test binary, and so the agent the harness builds for it,
// has the race detector on, which multiplies memory and CPU.
const raceBuild = true
