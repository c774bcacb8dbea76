#!/usr/bin/env bash
# A walk-through of the disk commands on images made in a temporary folder:
# build a VHDX checkpoint chain and a VHD one, inspect, check, flatten, and
# prove by content hash that the flattened disk reads the same as the chain;
# then the recovery story on a lab (tmpfs volumes; root, or a private user
# namespace): diagnose a store where a merge cannot fit (0x80070070), show the
# plan, relocate with merge and move back, and prove by content hash that the
# VM's disks read the same.
set -euo pipefail
# The lab part mounts tmpfs volumes: as a normal user, run the whole demo in
# a private user and mount namespace when the kernel allows it.
if [ "$(id -u)" != 0 ] && [ -z "${HVSNAP_DEMO_NS:-}" ] && unshare -Urm true 2>/dev/null; then
  exec env HVSNAP_DEMO_NS=1 unshare -Urm "$0" "$@"
fi
export HVSNAP_LAB_NO_NS=1 # hvsnap lab must not start its own namespace shell here
bin=${1:-bin/hvsnap}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d "${TMPDIR:-/tmp}/hvsnap-demo.XXXXXX")
lab="$work/lab"
cleanup() { "$bin" -q lab teardown --root "$lab" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run()  { printf '$ %s\n' "$*"; "$@"; }
hvsnap() { "$bin" -q "$@"; }

step "1. A base disk and two checkpoints (VHDX), each holding different data"
run hvsnap create --size 256M base.vhdx
run hvsnap write --offset 0 --fill 0x11 --length 8M base.vhdx
run hvsnap create --parent base.vhdx 'base_6F1C2D3E-0000-4000-8000-000000000001.avhdx'
run hvsnap write --offset 4M --fill 0x22 --length 6M 'base_6F1C2D3E-0000-4000-8000-000000000001.avhdx'
run hvsnap create --parent 'base_6F1C2D3E-0000-4000-8000-000000000001.avhdx' 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx'
printf 'hello from the newest checkpoint' > note.txt
run hvsnap write --offset 7M --input note.txt 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx'

step "2. What the leaf is, and the chain it stands on"
run hvsnap info --chain 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx'

step "3. Check the whole chain"
run hvsnap check 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx'

step "4. Writing into a disk that has children is refused"
if hvsnap write --offset 0 --fill 0xFF --length 4096 base.vhdx; then echo "unexpected: write succeeded"; exit 1; fi

step "5. Flatten the chain into one standalone disk, and to raw"
run hvsnap convert 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx' flat.vhdx
run hvsnap convert 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx' flat.raw
chain_sum=$(hvsnap convert 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx' - | sha256sum | cut -c1-16)
flat_sum=$(hvsnap convert flat.vhdx - | sha256sum | cut -c1-16)
raw_sum=$(sha256sum flat.raw | cut -c1-16)
echo "sha256 chain=$chain_sum flat.vhdx=$flat_sum flat.raw=$raw_sum"
[ "$chain_sum" = "$flat_sum" ] && [ "$chain_sum" = "$raw_sum" ] || { echo "MISMATCH"; exit 1; }
if command -v qemu-img >/dev/null; then
  q=$(qemu-img convert -f vhdx -O raw flat.vhdx /dev/stdout 2>/dev/null | sha256sum | cut -c1-16 || true)
  echo "qemu-img reads flat.vhdx as sha256 $q"
fi
du -h --apparent-size flat.raw | sed 's/^/apparent: /'; du -h flat.raw | sed 's/^/on disk:  /'

step "6. The same with VHD (.avhd)"
run hvsnap create --size 64M disk.vhd
run hvsnap write --offset 1M --fill 0x33 --length 3M disk.vhd
run hvsnap create --parent disk.vhd 'disk_0D2F9E11-0000-4000-8000-000000000001.avhd'
run hvsnap write --offset 2M --fill 0x44 --length 5000 'disk_0D2F9E11-0000-4000-8000-000000000001.avhd'
run hvsnap info --json 'disk_0D2F9E11-0000-4000-8000-000000000001.avhd' | head -40
run hvsnap check 'disk_0D2F9E11-0000-4000-8000-000000000001.avhd'

step "7. Move the parent, then repoint the child"
mkdir moved && mv disk.vhd moved/
hvsnap check 'disk_0D2F9E11-0000-4000-8000-000000000001.avhd' || echo "(exit $? — the parent is missing, as expected)"
run hvsnap reparent --parent moved/disk.vhd 'disk_0D2F9E11-0000-4000-8000-000000000001.avhd'
run hvsnap check 'disk_0D2F9E11-0000-4000-8000-000000000001.avhd'

step "8. Merge the middle checkpoint into the base (a deleted checkpoint's pending merge)"
run hvsnap merge --dry-run 'base_6F1C2D3E-0000-4000-8000-000000000001.avhdx'
run hvsnap merge --yes 'base_6F1C2D3E-0000-4000-8000-000000000001.avhdx'
after=$(hvsnap convert 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx' - | sha256sum | cut -c1-16)
echo "sha256 of the VM's disk before=$chain_sum after=$after"
[ "$chain_sum" = "$after" ] || { echo "MISMATCH"; exit 1; }
hvsnap info --chain 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx' | sed -n '/^Resolved parent/p;/^Chain/,/^$/p'
run hvsnap check 'base_6F1C2D3E-0000-4000-8000-000000000002.avhdx'

step "9. A store in trouble (a lab on real small tmpfs volumes): a deleted checkpoint's merge cannot fit on D:"
if ! run hvsnap lab merge-cannot-fit --root "$lab"; then
  echo "(the lab needs root for its tmpfs volumes, or a private user namespace: run make demo as root for the rest of the story)"
  exit 0
fi

step "10. Diagnose: what is wrong, the evidence, the plan"
run hvsnap diagnose "$lab"

step "11. The runbook: numbered steps with the exact commands for this store"
run hvsnap runbook merge-cannot-fit "$lab"

step "12. Relocate to a volume with room, merge there, move back (the runbook runs hvsnap relocate)"
run hvsnap runbook merge-cannot-fit --execute --yes "$lab"

step "13. Prove it: the VMs' disks read the same as before (SHA-256 of their whole virtual content)"
run hvsnap lab verify --root "$lab"
run hvsnap diagnose "$lab"

step "14. The same host with the checkpoint disks on a small snapshot volume: paused-critical"
"$bin" -q lab teardown --root "$lab" >/dev/null
run hvsnap lab paused-critical --root "$lab"
run hvsnap diagnose "$lab"
run hvsnap lab teardown --root "$lab"

echo
echo "demo finished: every step above ran on files in $work (removed now)"
