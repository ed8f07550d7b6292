//go:build !race

package harness

// raceEnabled: this test binary was built without -race.
const raceEnabled = false
