//! The module as an OCI image (`make oci`, scripts/make-oci.py): reproducible, in the Wasm image
//! format Istio reads, and it survives a round trip through a real registry byte for byte: skopeo
//! pushes it to Debian's docker-registry on 127.0.0.1 and pulls it back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::envoy::{repo_root, wasm_path};
use common::get;
use common::python::free_port;
use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn make_oci(layout: &Path, tag: &str) -> String {
    let output = Command::new(repo_root().join("scripts/make-oci.py")).arg(wasm_path()).arg(layout).arg(tag).output().expect("run scripts/make-oci.py");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn json_file(path: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())).unwrap()
}

/// The manifest of the layout's only image.
fn manifest_of(layout: &Path) -> (String, Value) {
    let index = json_file(layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest = serde_json::from_slice(&blob(layout, &digest)).unwrap();
    (digest, manifest)
}

/// `plugin.wasm` from the image's layer, as Istio's fetcher reads it.
fn plugin_wasm(layout: &Path) -> Vec<u8> {
    let (_, manifest) = manifest_of(layout);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer");
    let layer = blob(layout, layers[0]["digest"].as_str().unwrap());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
    let mut entries = archive.entries().unwrap();
    let mut entry = entries.next().expect("a file in the layer").unwrap();
    assert_eq!(entry.path().unwrap().to_str(), Some("plugin.wasm"));
    let mut module = Vec::new();
    entry.read_to_end(&mut module).unwrap();
    assert!(entries.next().is_none(), "plugin.wasm only");
    module
}

/// Debian's docker-registry on a free loopback port, storing into a temporary directory; stopped
/// by pid when dropped.
struct Registry {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(
            &config,
            format!("version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: \"{addr}\"}}\n", storage.display()),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/install-oci-tools.sh; make test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { addr, child, _dir: dir }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skopeo(args: &[&str]) {
    let output = Command::new("skopeo").args(args).output().expect("skopeo (scripts/install-oci-tools.sh; make test installs it)");
    assert!(output.status.success(), "skopeo {args:?}:\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_image_is_reproducible_and_in_the_compat_wasm_format() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let printed = make_oci(&a, "0.1.0");
    make_oci(&b, "0.1.0");
    let (digest, manifest) = manifest_of(&a);
    assert_eq!(manifest_of(&b).0, digest, "same module, same image");
    assert!(printed.contains(&format!("manifest {digest}")), "{printed}");
    println!("{}", printed.trim());

    assert_eq!(json_file(a.join("oci-layout"))["imageLayoutVersion"], "1.0.0");
    assert_eq!(json_file(a.join("index.json"))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "0.1.0");
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["annotations"]["module.wasm.image/variant"], "compat");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(plugin_wasm(&a), std::fs::read(wasm_path()).unwrap());
    // Every blob is named by its digest and has the size its descriptor says.
    for descriptor in [&manifest["config"], &manifest["layers"][0]] {
        let data = blob(&a, descriptor["digest"].as_str().unwrap());
        assert_eq!(data.len() as u64, descriptor["size"].as_u64().unwrap());
    }
}

#[test]
fn a_registry_round_trip_returns_the_module_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (local, pulled) = (dir.path().join("local"), dir.path().join("pulled"));
    make_oci(&local, "0.1.0");
    let registry = Registry::start();
    let remote = format!("docker://{}/envoy-persistence:0.1.0", registry.addr);
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:0.1.0", local.display()), &remote]);

    // What a client such as Istio's fetcher gets from the registry: the same manifest, by digest.
    let (digest, manifest) = manifest_of(&local);
    let accept = b"application/vnd.oci.image.manifest.v1+json".as_slice();
    let response = get(registry.addr, "/v2/envoy-persistence/manifests/0.1.0", &[("accept", accept)]);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(serde_json::from_slice::<Value>(&response.body).unwrap(), manifest);

    skopeo(&["copy", "--src-tls-verify=false", &remote, &format!("oci:{}:0.1.0", pulled.display())]);
    assert_eq!(manifest_of(&pulled).0, digest);
    assert_eq!(plugin_wasm(&pulled), std::fs::read(wasm_path()).unwrap(), "the module comes back byte for byte");
    drop(registry);
}
