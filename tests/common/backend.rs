//! Real backend servers on 127.0.0.1: each answers with its name (header `x-backend` and the body),
//! serves `/healthz` (200, or 503 after `set_healthy(false)`), records what it received byte for
//! byte, and sets cookies on request (`?set-cookie=<percent-encoded Set-Cookie value>`, repeatable)
//! and other headers (`?response-header=<name>:<value>`, percent-encoded).
//!
//! `Backend::servlet` also behaves like a servlet container with in-memory sessions: it knows the
//! session ids it issued, finds the request's in the `JSESSIONID` cookie, a `;jsessionid=` path
//! parameter or a `JSESSIONID` query parameter, issues `JSESSIONID=<hex>.<name>` (Tomcat's
//! `<id>.<jvmRoute>`) when it does not know the request's, rotates it on `/login` and deletes it
//! on `/logout`. Header `x-session` says which session served the request.

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
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        http::header(&self.headers, name)
    }
}

struct State {
    name: String,
    /// Session ids this backend issued (servlet behaviour), None for a plain backend.
    sessions: Option<Mutex<std::collections::HashSet<String>>>,
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
        Backend::launch(name, false)
    }

    /// A backend with servlet-container sessions (see the module docs).
    pub fn servlet(name: &str) -> Backend {
        Backend::launch(name, true)
    }

    fn launch(name: &str, servlet: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(State {
            name: name.to_string(),
            sessions: servlet.then(|| Mutex::new(std::collections::HashSet::new())),
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

    /// Starts `n` servlet backends named backend-1 .. backend-n.
    pub fn servlets(n: usize) -> Vec<Backend> {
        (1..=n).map(|i| Backend::servlet(&format!("backend-{i}"))).collect()
    }

    /// Whether this (servlet) backend issued session `id` and still knows it.
    pub fn knows_session(&self, id: &str) -> bool {
        self.state.sessions.as_ref().is_some_and(|s| s.lock().expect("lock").contains(id))
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
        if request.path.split('?').next().is_some_and(|p| p.ends_with("/events")) {
            if stream_events(&mut writer, &request, state).is_err() {
                return;
            }
            continue;
        }
        let (status, headers, body) = respond(&request, state);
        if http::write_response(&mut writer, status, &headers, &body).is_err() {
            return;
        }
    }
}

/// `.../events?count=N&gap_ms=M`: a server-sent event stream, one event every M milliseconds, each
/// written and flushed as it happens (chunked), so a client sees whether anything held it back.
fn stream_events(writer: &mut TcpStream, request: &http::Request, state: &State) -> std::io::Result<()> {
    use std::io::Write;
    let query = request.path.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name).and_then(|(_, v)| v.parse::<u64>().ok());
    let (count, gap) = (param("count").unwrap_or(3), std::time::Duration::from_millis(param("gap_ms").unwrap_or(300)));
    write!(writer, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-backend: {}\r\ntransfer-encoding: chunked\r\n\r\n", state.name)?;
    for i in 0..count {
        if i > 0 {
            thread::sleep(gap);
        }
        let event = format!("data: event {i}\n\n");
        write!(writer, "{:x}\r\n{event}\r\n", event.len())?;
        writer.flush()?;
    }
    writer.write_all(b"0\r\n\r\n")?;
    writer.flush()
}

fn respond(request: &http::Request, state: &State) -> (u16, Headers, Vec<u8>) {
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    if path == "/healthz" {
        return if state.healthy.load(Ordering::SeqCst) { (200, vec![], b"ok\n".to_vec()) } else { (503, vec![], b"unhealthy\n".to_vec()) };
    }
    state.received.lock().expect("lock").push(Received {
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
    });
    let mut headers: Headers = vec![("x-backend".into(), state.name.clone().into_bytes()), ("content-type".into(), b"text/plain".to_vec())];
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        if key == "set-cookie" {
            headers.push(("set-cookie".into(), percent_decode(value)));
        }
        if key == "response-header" {
            let decoded = percent_decode(value);
            if let Some(colon) = decoded.iter().position(|&b| b == b':') {
                headers.push((String::from_utf8_lossy(&decoded[..colon]).to_lowercase(), decoded[colon + 1..].to_vec()));
            }
        }
    }
    if let Some(sessions) = &state.sessions {
        servlet_session(request, path, query, state, sessions, &mut headers);
    }
    let wants_html = http::header(&request.headers, "accept").is_some_and(|a| String::from_utf8_lossy(a).contains("text/html"));
    if wants_html {
        headers.retain(|(name, _)| name != "content-type");
        headers.push(("content-type".into(), b"text/html; charset=utf-8".to_vec()));
        return (200, headers, page(request, &state.name).into_bytes());
    }
    (200, headers, format!("backend={}\n", state.name).into_bytes())
}

/// The page a browser sees: which backend answered, and what the persistence filter decided.
fn page(request: &http::Request, name: &str) -> String {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let decision = http::header(&request.headers, "x-persistence-decision").map_or_else(|| "-".to_string(), |v| String::from_utf8_lossy(v).into_owned());
    let hue = name.bytes().map(u32::from).sum::<u32>() * 47 % 360;
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}</title><style>\
         body{{font-family:sans-serif;margin:3em;background:hsl({hue},60%,92%)}}h1{{font-size:3em;color:hsl({hue},60%,30%)}}\
         code{{background:#fff;padding:.2em .4em}}</style></head><body>\
         <h1 id=\"backend\">{name}</h1>\
         <p>This page was served by <b>{name}</b>. Reload: with persistence you stay here.</p>\
         <p>Persistence decision: <code id=\"decision\">{}</code></p>\
         <p>Request: <code>{} {}</code></p></body></html>\n",
        escape(&decision),
        escape(&request.method),
        escape(&request.path),
    )
}

fn servlet_session(
    request: &http::Request,
    path: &str,
    query: &str,
    state: &State,
    sessions: &Mutex<std::collections::HashSet<String>>,
    headers: &mut Headers,
) {
    let from_cookie = http::header(&request.headers, "cookie")
        .and_then(|c| String::from_utf8_lossy(c).split(';').find_map(|pair| pair.trim().strip_prefix("JSESSIONID=").map(str::to_string)));
    let from_path = path.split(';').skip(1).find_map(|p| p.strip_prefix("jsessionid=").map(|v| v.split('/').next().unwrap_or(v).to_string()));
    let from_query = query.split('&').find_map(|p| p.strip_prefix("JSESSIONID=").map(str::to_string));
    let presented = from_cookie.or(from_path).or(from_query);
    let mut sessions = sessions.lock().expect("lock");
    let known = presented.filter(|id| sessions.contains(id));
    let base = path.split(';').next().unwrap_or(path);
    if base == "/logout" {
        if let Some(id) = &known {
            sessions.remove(id);
        }
        headers.push(("set-cookie".into(), b"JSESSIONID=; Path=/; Max-Age=0".to_vec()));
        return;
    }
    let session = match known {
        Some(id) if base != "/login" => id,
        old => {
            // New session (or a rotated one on login, as session fixation protection does).
            if let Some(old) = old {
                sessions.remove(&old);
            }
            let id = format!("{:016X}.{}", random_u64(), state.name);
            sessions.insert(id.clone());
            headers.push(("set-cookie".into(), format!("JSESSIONID={id}; Path=/; HttpOnly").into_bytes()));
            id
        }
    };
    headers.push(("x-session".into(), session.into_bytes()));
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
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
