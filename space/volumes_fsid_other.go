//go:build !unix

package space

import "os"

// fsID: not available; every mount point counts as its own file system.
func fsID(mount string) string { return "" }

// statFSID: not available.
func statFSID(fi os.FileInfo) string { return "" }
