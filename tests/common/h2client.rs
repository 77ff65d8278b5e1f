//! A real HTTP/2 client (cleartext, prior knowledge: Envoy's connection manager detects it), one
//! request per connection. Header fields are sent exactly as given, so a test can split `cookie`
//! into several fields as RFC 9113 allows.

use bytes::Bytes;
use std::net::SocketAddr;

pub struct H2Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// One request over a new HTTP/2 connection to `addr`.
pub fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> H2Response {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.expect("HTTP/2 connection ready");
        let mut request = http::Request::builder().method(method).uri(format!("http://app.test{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("request");
        let (response, mut stream) = client.send_request(request, body.is_none()).expect("send request");
        if let Some(body) = body {
            stream.send_data(Bytes::copy_from_slice(body), true).expect("send body");
        }
        let response = response.await.expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        H2Response { status, headers, body: bytes }
    })
}
