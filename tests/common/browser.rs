//! A real browser for the tests: Debian's headless Chromium driven through chromedriver's WebDriver
//! API (JSON over HTTP on loopback). Chromedriver is started on a free port and stopped by pid.

use super::client::Connection;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub fn start() -> Browser {
        let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let chromedriver = std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(std::path::Path::new(&chromedriver).exists(), "{chromedriver} missing: `make test` installs chromium and chromium-driver");
        let port = free_port();
        let driver = Command::new(&chromedriver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::Builder::new().prefix("envoy-persistence-chromium").tempdir().expect("profile dir");
        let mut browser = Browser { driver, addr, session: String::new(), _profile: profile };
        // Flags for a sandboxed machine without network beyond loopback (see the machine notes).
        let args = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            format!("--user-data-dir={}", browser._profile.path().display()),
            "--window-size=900,520"
        ]);
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}}});
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"].as_str().expect("session id").to_string();
        browser
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut connection = Connection::open(self.addr);
        let response = connection.send_json(method, path, &body.unwrap_or_else(|| json!({}))).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("WebDriver {path}: {e}: {}", response.body_text()));
        assert_eq!(response.status, 200, "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn open(&mut self, url: &str) {
        let path = self.session_path("/url");
        self.call("POST", &path, Some(json!({"url": url})));
    }

    pub fn reload(&mut self) {
        let path = self.session_path("/refresh");
        self.call("POST", &path, Some(json!({})));
    }

    /// Runs JavaScript in the page and returns its result.
    pub fn script(&mut self, source: &str) -> Value {
        let path = self.session_path("/execute/sync");
        self.call("POST", &path, Some(json!({"script": source, "args": []})))
    }

    /// The cookies the browser holds for the current page (including HttpOnly ones).
    pub fn cookies(&mut self) -> Vec<Value> {
        let path = self.session_path("/cookie");
        self.call("GET", &path, None).as_array().cloned().unwrap_or_default()
    }

    /// A PNG of the page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let path = self.session_path("/screenshot");
        let data = self.call("GET", &path, None);
        base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("base64 PNG")).expect("PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = self.session_path("");
            let _ = Connection::open(self.addr).send_json("DELETE", &path, &json!({}));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
