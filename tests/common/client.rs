//! A real HTTP/1.1 client over TCP: one request per connection by default, or a kept-alive
//! `Connection`; optionally from a chosen loopback source address. Plus a browser-like cookie jar.

use super::http::{self, Response};
use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Connection {
        Connection::wrap(TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}")))
    }

    /// Connects from `source` (any 127.0.0.0/8 address works on Linux loopback).
    pub fn open_from(addr: SocketAddr, source: IpAddr) -> Connection {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).expect("socket");
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap_or_else(|e| panic!("bind {source}: {e}"));
        socket.connect(&addr.into()).unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"));
        Connection::wrap(socket.into())
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: TcpStream) -> Connection {
        Connection::wrap(stream)
    }

    fn wrap(stream: TcpStream) -> Connection {
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        Connection { reader: BufReader::new(stream), writer }
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &[u8])]) -> std::io::Result<Response> {
        let mut all: Vec<(&str, &[u8])> = vec![("host", b"app.test")];
        all.extend_from_slice(headers);
        http::write_request(&mut self.writer, method, path, &all)?;
        http::read_response(&mut self.reader, method)
    }

    /// A request with a JSON body (WebDriver and the like).
    pub fn send_json(&mut self, method: &str, path: &str, body: &serde_json::Value) -> std::io::Result<Response> {
        let body = body.to_string();
        http::write_request_with_body(&mut self.writer, method, path, &[("host", b"localhost"), ("content-type", b"application/json")], Some(body.as_bytes()))?;
        http::read_response(&mut self.reader, method)
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        self.send("GET", path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

/// GET on a new connection.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Response {
    Connection::open(addr).get(path, headers)
}

/// What a browser keeps: name -> value, updated from Set-Cookie, sent back as one Cookie header.
#[derive(Default, Clone, Debug)]
pub struct Jar {
    pub cookies: BTreeMap<String, String>,
}

impl Jar {
    pub fn update(&mut self, response: &Response) {
        for set_cookie in response.all("set-cookie") {
            let pair = set_cookie.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                let removed = set_cookie.split(';').any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
                if removed {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_string(), value.trim().to_string());
                }
            }
        }
    }

    pub fn header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// GET with the jar's cookies on a new connection; the jar learns from the response.
    pub fn get_from(&mut self, addr: SocketAddr, path: &str) -> Response {
        let cookie = self.header();
        let headers: Vec<(&str, &[u8])> = cookie.iter().map(|c| ("cookie", c.as_bytes())).collect();
        let response = get(addr, path, &headers);
        self.update(&response);
        response
    }
}
