#!/usr/bin/env bash
# Installs the real protocol clients and servers the integration tests drive (the MCP Python SDK
# and gRPC) into .venv, next to Envoy, at pinned versions; prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-envoy.sh >/dev/null 2>&1
packages=(mcp==2.3.0 grpcio==1.85.3)
stamp=".venv/.test-clients-$(echo "${packages[*]}" | tr ' =' '_-')"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet "${packages[@]}"
  touch "$stamp"
fi
echo "$PWD/.venv/bin/python"
