//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

func inNamespace(args []string) (*exec.Cmd, error) {
	return nil, errors.New("private mount namespaces need Linux")
}
