#!/usr/bin/env bash
# A walk-through of the disk commands on images made in a temporary folder:
# build a VHDX checkpoint chain and a VHD one, inspect, check, flatten, and
# prove by content hash that the flattened disk reads the same as the chain.
set -euo pipefail
bin=${1:-bin/hvsnap}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d "${TMPDIR:-/tmp}/hvsnap-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
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

echo
echo "demo finished: every step above ran on files in $work (removed now)"
