//go:build !unix

package space

// fsID: not available; every mount point counts as its own file system.
func fsID(mount string) string { return "" }
