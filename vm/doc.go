// Package vm finds Hyper-V virtual machines in a store of files and reads
// their configurations, without Hyper-V and without writing anything.
//
// Two configuration formats are read into one generic key tree ([Key]) and
// then into one model ([Config]):
//
//   - XML configurations of Windows Server 2008 R2 – 2012 R2 (config
//     version ≤ 5.0), UTF-16LE with a byte-order mark (UTF-8 is accepted too);
//   - the VMCX/VMRS binary container of Windows Server 2016 and later
//     (config version ≥ 6.2), read through [ReadContainer], which validates
//     every checksum, offset and length and never panics on hostile input.
//
// Both formats share the same key paths below the root key `configuration`
// (see FORMATS.md §5): properties/name, properties/global_id,
// properties/subtype, properties/version, global_settings/disk_merge_pending,
// settings/memory/bank/size, settings/processors/count and the drive sections
// `_<device instance>_/controllerN/driveM/{type,pathname}`.
//
// Windows paths found in configurations are mapped to local paths through a
// [PathMapper] (the lead's vhd.PathMap satisfies it), falling back to the
// file name inside the VM's own folder tree.
//
// [Scan] walks directory trees with a bounded worker pool and returns a
// [Store]: the VMs with their checkpoint configurations and state files, every
// disk image file (listed, not opened) and the host registries (data.vmcx).
// A corrupt configuration becomes a warning, never an aborted scan.
//
// VMCX is read only: this package never writes any file.
package vm
