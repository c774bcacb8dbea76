//go:build !linux

package space

import "context"

func partitionsCtx() context.Context { return context.Background() }
