//go:build !linux

package main

import "os"

func maxRSS(ps *os.ProcessState) int64 { return 0 }

func selfMaxRSS() int64 { return 0 }
