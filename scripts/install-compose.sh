#!/usr/bin/env bash
# Makes sure Compose is there for the docker-compose test: the docker compose plugin, or else
# Debian's docker-compose. The Docker engine itself comes with the machine.
set -euo pipefail
docker compose version >/dev/null 2>&1 && exit 0
command -v docker-compose >/dev/null 2>&1 && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose
