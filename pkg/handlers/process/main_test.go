package process_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The handlers start processes and pipe readers: none may outlive Run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
