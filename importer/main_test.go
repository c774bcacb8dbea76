package importer_test

import (
	"os"
	"testing"
)

// TestMain runs the tests in a tmpfs (/dev/shm) when there is one: the
// import fsyncs every file and folder, and on a busy disk those flushes,
// not the code under test, would dominate the run time.
func TestMain(m *testing.M) {
	if os.Getenv("HVSNAP_TEST_CHILD") != "" {
		os.Exit(childMain())
	}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() && os.Getenv("HVSNAP_TEST_DISK") == "" {
		if d, err := os.MkdirTemp("/dev/shm", "hvsnap-importer-test-"); err == nil {
			os.Setenv("TMPDIR", d)
			code := m.Run()
			os.RemoveAll(d)
			os.Exit(code)
		}
	}
	os.Exit(m.Run())
}
