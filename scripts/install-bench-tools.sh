#!/usr/bin/env bash
# Installs the benchmark's load generator (wrk), backends (nginx) and reference proxy (HAProxy).
set -euo pipefail
missing=()
for tool in wrk:wrk nginx:nginx-light haproxy:haproxy; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
