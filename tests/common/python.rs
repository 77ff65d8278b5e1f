//! Real protocol peers written in Python (tests/python/): servers started on free loopback ports
//! and stopped by pid when dropped, and clients run to completion with their JSON result.
//! `make test` installs the interpreter's packages (scripts/install-test-clients.sh).

use super::envoy::repo_root;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The interpreter with the test packages: TEST_PYTHON, else the repository's .venv.
pub fn python() -> PathBuf {
    let python = std::env::var("TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|_| repo_root().join(".venv/bin/python"));
    assert!(python.exists(), "{} is missing: run scripts/install-test-clients.sh (make test does)", python.display());
    python
}

fn script(name: &str) -> PathBuf {
    repo_root().join("tests/python").join(name)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A server process; stopped (SIGKILL, by pid) when dropped.
pub struct PythonServer {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl PythonServer {
    /// Starts `tests/python/<script> <name> <port>` and waits until it accepts connections.
    pub fn start(script_name: &str, name: &str) -> PythonServer {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(python())
            .arg(script(script_name))
            .args([name, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script_name}: {e}"));
        let mut server = PythonServer { name: name.to_string(), addr, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{script_name} {name} exited: {status}");
            }
            assert!(Instant::now() < deadline, "{script_name} {name} does not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn start_many(script_name: &str, n: usize) -> Vec<PythonServer> {
        (1..=n).map(|i| PythonServer::start(script_name, &format!("server-{i}"))).collect()
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/python/<script> <args>` to completion (at most `limit`) and parses the JSON line
/// it prints last.
pub fn run_client(script_name: &str, args: &[String], limit: Duration) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(script(script_name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script_name}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script_name} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script_name}: no JSON result ({e}): {stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
}
