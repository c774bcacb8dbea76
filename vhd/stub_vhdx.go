package vhd

import "errors"

// Placeholder until the VHDX backend lands (helper replaces this file).
func openVHDX(f File, path string, rw bool) (backend, error) {
	return nil, errors.New("vhdx backend missing")
}
func createVHDX(f File, path string, spec CreateSpec, np *NewParent) (backend, error) {
	return nil, errors.New("vhdx backend missing")
}
