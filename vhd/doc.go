// Package vhd reads and writes Hyper-V virtual disk files: VHD (Virtual Hard
// Disk 1.0, the 2006 specification) and VHDX (MS-VHDX), each as fixed,
// dynamic or differencing disks, and the parent chains differencing disks form.
//
// It is the only package of hvsnap that knows byte layouts. The rest of the
// program works through:
//
//   - Open / Create: one file (an *Image).
//   - OpenChain: a leaf and all its parents (a *Chain), an io.ReaderAt over the
//     virtual disk, writable at its leaf.
//   - Image.Runs / Chain.Extents: which virtual ranges a file holds, at sector
//     precision for differencing disks, streamed so memory stays flat.
//   - Check: structural and chain validation as typed findings.
//
// Layout of the source: format constants and encode/decode per format in
// vhd1_*.go (VHD) and vhdx_*.go (VHDX); the format-neutral layer (Image,
// Chain, parent resolution, errors) in the other files. See
// ../shared/docs/FORMATS.md in the project workspace for the on-disk digest.
package vhd
