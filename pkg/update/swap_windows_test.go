//go:build windows

package update

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestHelperSleep is the running "agent" of TestSwapRunningExecutable.
func TestHelperSleep(t *testing.T) {
	if os.Getenv("MQAGENT_TEST_SLEEP") == "" {
		t.Skip("helper")
	}
	time.Sleep(20 * time.Second)
}

// TestSwapRunningExecutable: the running executable is renamed aside (it
// cannot be overwritten), the new one moved in, and a restore puts the old
// one back while the new one runs.
func TestSwapRunningExecutable(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := testDir(t)
	exe := filepath.Join(dir, "mqagent.exe")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^TestHelperSleep$")
		cmd.Env = append(os.Environ(), "MQAGENT_TEST_SLEEP=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	old := run()
	staged, backup := StagedPath(exe), BackupPath(exe)
	newer := append([]byte(nil), b...)
	newer = append(newer, []byte("new version trailer")...)
	if err := os.WriteFile(staged, newer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Install(exe, staged, backup); err != nil {
		t.Fatalf("install while the old one runs: %v", err)
	}
	if got, _ := os.ReadFile(exe); len(got) != len(newer) {
		t.Fatal("exe is not the new binary")
	}
	if got, _ := os.ReadFile(backup); len(got) != len(b) {
		t.Fatal("backup is not the old binary")
	}
	_ = old.Process.Kill()
	_ = old.Wait()
	run() // the new version runs from exe
	if err := Restore(exe, backup); err != nil {
		t.Fatalf("restore while the new one runs: %v", err)
	}
	if got, _ := os.ReadFile(exe); len(got) != len(b) {
		t.Fatal("exe is not the old binary after the restore")
	}
	if _, err := os.Stat(backup); !os.IsNotExist(err) {
		t.Fatal("backup left after the restore")
	}
}
