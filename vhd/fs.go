package vhd

import "github.com/hvsnap/hvsnap/internal/fsutil"

func syncDir(path string) error { return fsutil.SyncDir(path) }
