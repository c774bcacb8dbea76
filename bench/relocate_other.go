//go:build !linux

package main

import "errors"

func mountTmpfs(dir, size string) error { return errors.New("tmpfs volumes need Linux") }

func unmountTmpfs(string) {}
