#!/usr/bin/env bash
# Installs what the oracle tests use (qemu-img, libvhdi's vhdiinfo/vhdimount,
# FUSE, lz4; chromium to check the HTML report in a browser) when missing and
# we are root on a Debian-like system. Otherwise says which tests will skip.
set -u
need=()
command -v qemu-img  >/dev/null 2>&1 || need+=(qemu-utils)
command -v vhdiinfo  >/dev/null 2>&1 || need+=(libvhdi-utils)
command -v vhdimount >/dev/null 2>&1 || need+=(libvhdi-utils)
command -v fusermount >/dev/null 2>&1 || command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v lz4 >/dev/null 2>&1 || need+=(lz4)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  if ! apt-get install -y -qq $pkgs >/dev/null 2>&1; then
    echo "test-deps: apt-get install $pkgs failed; oracle tests that need them will skip"
  fi
else
  echo "test-deps: missing $pkgs (not root or no apt-get): oracle tests that need them will skip"
fi
exit 0
