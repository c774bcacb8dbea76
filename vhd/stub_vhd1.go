package vhd

import "errors"

// Placeholder until the VHD backend lands (helper replaces this file).
func openVHD(f File, path string, rw bool) (backend, error) {
	return nil, errors.New("vhd backend missing")
}
func createVHD(f File, path string, spec CreateSpec, np *NewParent) (backend, error) {
	return nil, errors.New("vhd backend missing")
}
