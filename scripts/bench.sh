#!/usr/bin/env bash
# Side-by-side benchmarks (see bench/main.go). Extra flags: BENCHFLAGS="--virtual 8G --data 2G".
set -euo pipefail
bin=${1:-bin/hvsnap}
exec go run ./bench --hvsnap "$bin" ${BENCHFLAGS:-}
