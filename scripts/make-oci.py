#!/usr/bin/env python3
"""Writes the module as an OCI image layout, without Docker, in the Wasm image format Istio's
WasmPlugin (url: oci://...) and Envoy Gateway read: the "compat" variant of the Wasm image
specification (solo-io/wasm, spec-compat.md): one application/vnd.oci.image.layer.v1.tar+gzip layer
holding plugin.wasm, and the manifest annotation module.wasm.image/variant=compat.

    scripts/make-oci.py <module.wasm> <layout directory> <tag>

The image is reproducible: the same .wasm gives the same bytes and digests (no timestamps, owners or
file-system order). Prints the manifest digest and the image size. Publish it with e.g.
    skopeo copy oci:<layout directory>:<tag> docker://registry.example.com/envoy-persistence:<tag>
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def layer_tar(module: bytes) -> bytes:
    """A tar with one file, plugin.wasm, and nothing that varies between builds."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(module), 0o444, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return out.getvalue()


def gzipped(data: bytes) -> bytes:
    out = io.BytesIO()
    # mtime 0 and no file name: the gzip header is the same on every run.
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="", compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(layout: str, data: bytes) -> dict:
    digest = sha256(data)
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "wb") as f:
        f.write(data)
    return {"digest": digest, "size": len(data)}


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    module_path, layout, tag = sys.argv[1:]
    with open(module_path, "rb") as f:
        module = f.read()
    if module[:4] != b"\0asm":
        print(f"{module_path}: not a WebAssembly module", file=sys.stderr)
        return 2
    if os.path.exists(layout):
        shutil.rmtree(layout)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))

    tar = layer_tar(module)
    layer = {"mediaType": LAYER_MEDIA_TYPE, **write_blob(layout, gzipped(tar))}
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "config": {},
    }
    config_descriptor = {"mediaType": CONFIG_MEDIA_TYPE, **write_blob(layout, canonical(config))}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_descriptor,
        "layers": [layer],
        "annotations": {"module.wasm.image/variant": "compat"},
    }
    manifest_descriptor = {
        "mediaType": MANIFEST_MEDIA_TYPE,
        **write_blob(layout, canonical(manifest)),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_descriptor]}))

    total = manifest_descriptor["size"] + config_descriptor["size"] + layer["size"]
    print(f"{layout} ({tag}): manifest {manifest_descriptor['digest']}, {total} bytes "
          f"(layer {layer['size']}, module {len(module)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
