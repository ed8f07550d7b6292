package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqagent/mqagent/pkg/protocol"
)

func TestRotationKeepsTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := OpenRotating(path, 2000, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := l.Append(&protocol.Audit{V: 1, Host: "h", ID: fmt.Sprintf("c%03d", i), Event: protocol.EventReceived}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files := Files(path)
	if len(files) != 4 || files[0] != path+".3" || files[3] != path {
		t.Fatalf("files %v, want .3 .2 .1 and the log", files)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 2000 {
			t.Fatalf("%s is %d bytes, over the rotation size", f, st.Size())
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", f, st.Mode().Perm())
		}
	}
	n, err := VerifyFiles(files...)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n >= 100 {
		t.Fatalf("verified %d records; want the ones kept (some rotated away)", n)
	}
	// The newest file alone starts with a link to .1: Verify of it alone
	// fails, VerifyFiles of .1 and it passes.
	if _, err := VerifyFiles(path+".1", path); err != nil {
		t.Fatal(err)
	}
	// Deleting a whole rotated file in the middle breaks the chain.
	_, err = VerifyFiles(path+".3", path+".1", path)
	if err == nil || !strings.Contains(err.Error(), path+".1") || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("missing middle file: %v", err)
	}
	// Reopening continues the chain in the current file.
	l, err = OpenRotating(path, 2000, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(&protocol.Audit{V: 1, Host: "h", ID: "after", Event: protocol.EventReceived}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := VerifyFiles(Files(path)...); err != nil {
		t.Fatal(err)
	}
}
