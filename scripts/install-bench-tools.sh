#!/usr/bin/env bash
# Installs the benchmark's load generator (wrk), backends (nginx), reference proxy (HAProxy) and
# instruction counter (valgrind's callgrind).
set -euo pipefail
missing=()
for tool in wrk:wrk nginx:nginx-light haproxy:haproxy callgrind_control:valgrind; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
