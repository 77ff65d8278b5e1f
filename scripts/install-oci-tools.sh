#!/usr/bin/env bash
# Installs what the OCI image test needs: skopeo (copies images between an OCI layout and a
# registry) and Debian's docker-registry (the registry itself, started by the test on 127.0.0.1).
set -euo pipefail
missing=()
for tool in skopeo:skopeo docker-registry:docker-registry; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -q
# policy-rc.d-less containers: the package's own service is not wanted (the test runs its own).
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
