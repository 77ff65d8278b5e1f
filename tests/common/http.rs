//! Just enough HTTP/1.1 for the tests, on bytes: heads are parsed with httparse, bodies by
//! Content-Length or chunked. Header values stay raw bytes so tests can see exactly what crossed.

use std::io::{self, BufRead, Write};

pub type Headers = Vec<(String, Vec<u8>)>;

pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

pub fn header_str<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    header(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

pub fn all<'a>(headers: &'a Headers, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

/// Reads a message head (up to the empty line); None on a clean EOF before any byte.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated head")) };
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
        if head.len() > 256 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
}

fn to_headers(parsed: &[httparse::Header]) -> Headers {
    parsed.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect()
}

fn read_body(reader: &mut impl BufRead, headers: &Headers, may_lack_length: bool) -> io::Result<Vec<u8>> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                let mut trailer = String::new();
                while reader.read_line(&mut trailer)? > 2 {
                    trailer.clear();
                }
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0; 2];
            reader.read_exact(&mut crlf)?;
        }
    }
    match header_str(headers, "content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(length) => {
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            Ok(body)
        }
        None if may_lack_length => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            Ok(body)
        }
        None => Ok(Vec::new()),
    }
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

pub fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some(head) = read_head(reader)? else { return Ok(None) };
    let mut parsed = [httparse::EMPTY_HEADER; 256];
    let mut request = httparse::Request::new(&mut parsed);
    request.parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let method = request.method.unwrap_or("").to_string();
    let path = request.path.unwrap_or("").to_string();
    let headers = to_headers(request.headers);
    let body = read_body(reader, &headers, false)?;
    Ok(Some(Request { method, path, headers, body }))
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        all(&self.headers, name).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn read_response(reader: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let head = read_head(reader)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"))?;
    let mut parsed = [httparse::EMPTY_HEADER; 256];
    let mut response = httparse::Response::new(&mut parsed);
    response.parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let status = response.code.unwrap_or(0);
    let headers = to_headers(response.headers);
    let body = if method == "HEAD" || status == 204 || status == 304 {
        Vec::new()
    } else {
        read_body(reader, &headers, header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close")))?
    };
    Ok(Response { status, headers, body })
}

pub fn write_request(out: &mut impl Write, method: &str, path: &str, headers: &[(&str, &[u8])]) -> io::Result<()> {
    write_request_with_body(out, method, path, headers, None)
}

/// A request with a body (Content-Length is added).
pub fn write_request_with_body(out: &mut impl Write, method: &str, path: &str, headers: &[(&str, &[u8])], body: Option<&[u8]>) -> io::Result<()> {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    if let Some(body) = body {
        bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        bytes.extend_from_slice(body);
    } else {
        bytes.extend_from_slice(b"\r\n");
    }
    out.write_all(&bytes)?;
    out.flush()
}

pub fn write_response(out: &mut impl Write, status: u16, headers: &[(String, Vec<u8>)], body: &[u8]) -> io::Result<()> {
    let mut bytes = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (name, value) in headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    out.write_all(&bytes)?;
    out.flush()
}
