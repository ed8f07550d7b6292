//go:build race

package harness

// raceEnabled: this test binary was built with -race.
const raceEnabled = true
