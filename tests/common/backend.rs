//! Real backend servers on 127.0.0.1: each answers with its name (header `x-backend` and the body),
//! serves `/healthz` (200, or 503 after `set_healthy(false)`), records what it received byte for
//! byte, and sets cookies on request (`?set-cookie=<percent-encoded Set-Cookie value>`, repeatable).

use super::http::{self, Headers};
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Headers,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        http::header(&self.headers, name)
    }
}

struct State {
    name: String,
    healthy: AtomicBool,
    stopped: AtomicBool,
    received: Mutex<Vec<Received>>,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(State {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            received: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_state.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = accept_state.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        Backend { name: name.to_string(), addr, state }
    }

    /// Starts `n` backends named backend-1 .. backend-n.
    pub fn start_many(n: usize) -> Vec<Backend> {
        (1..=n).map(|i| Backend::start(&format!("backend-{i}"))).collect()
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received so far, health checks excluded.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    pub fn last_received(&self) -> Option<Received> {
        self.state.received.lock().expect("lock").last().cloned()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, state: &State) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = http::read_request(&mut reader) {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let (status, headers, body) = respond(&request, state);
        if http::write_response(&mut writer, status, &headers, &body).is_err() {
            return;
        }
    }
}

fn respond(request: &http::Request, state: &State) -> (u16, Headers, Vec<u8>) {
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    if path == "/healthz" {
        return if state.healthy.load(Ordering::SeqCst) {
            (200, vec![], b"ok\n".to_vec())
        } else {
            (503, vec![], b"unhealthy\n".to_vec())
        };
    }
    state.received.lock().expect("lock").push(Received {
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request.headers.clone(),
    });
    let mut headers: Headers = vec![("x-backend".into(), state.name.clone().into_bytes()), ("content-type".into(), b"text/plain".to_vec())];
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        if key == "set-cookie" {
            headers.push(("set-cookie".into(), percent_decode(value)));
        }
    }
    (200, headers, format!("backend={}\n", state.name).into_bytes())
}

pub fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

pub fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
