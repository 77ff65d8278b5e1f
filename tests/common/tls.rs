//! TLS for the tests: a PKI generated at test time (a CA, a server certificate for 127.0.0.1,
//! ::1 and localhost, client certificates on demand; never written outside a temp dir) and a
//! real TLS client (rustls) that can resume TLS 1.2 sessions by session id and says whether it did.

use super::http::{self, Response};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned, SupportedProtocolVersion};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: CertificateDer<'static>,
}

/// A client certificate and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("envoy-persistence-pki").tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "envoy-persistence test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        server_params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        server_params.subject_alt_names.push(SanType::IpAddress("::1".parse().expect("ip")));
        let server_cert = server_params.signed_by(&server_key, &issuer).expect("server certificate");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).expect("write");
        std::fs::write(dir.path().join("server-key.pem"), server_key.serialize_pem()).expect("write");
        Pki { dir, issuer, ca: ca_cert.der().clone() }
    }

    /// Where a file of `envoy/certs/` lives for this PKI (`ca.pem`, `server.pem`, `server-key.pem`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn client_identity(&self, name: &str) -> Identity {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names.push(SanType::URI(format!("spiffe://test/{name}").try_into().expect("uri")));
        let cert = params.signed_by(&key, &self.issuer).expect("client certificate");
        Identity { chain: vec![cert.der().clone()], key: key.serialize_der() }
    }
}

/// A TLS client with its own session cache (a browser, roughly): connections made through the
/// same `TlsClient` resume the session when the server allows it.
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

pub const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
pub const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl TlsClient {
    pub fn new(pki: &Pki, versions: &[&'static SupportedProtocolVersion], identity: Option<&Identity>) -> TlsClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.clone()).expect("CA");
        let builder = ClientConfig::builder_with_provider(provider).with_protocol_versions(versions).expect("versions").with_root_certificates(roots);
        let mut config = match identity {
            Some(identity) => {
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
                builder.with_client_auth_cert(identity.chain.clone(), key).expect("client certificate")
            }
            None => builder.with_no_client_auth(),
        };
        config.resumption = Resumption::in_memory_sessions(32).tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
        TlsClient { config: Arc::new(config) }
    }

    /// GET over a new TLS connection; also says whether the TLS session was resumed.
    pub fn get(&self, addr: SocketAddr, path: &str) -> (Response, bool) {
        let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let name = ServerName::IpAddress(addr.ip().into());
        let connection = ClientConnection::new(self.config.clone(), name).expect("TLS client");
        let mut stream = StreamOwned::new(connection, tcp);
        http::write_request(&mut stream, "GET", path, &[("host", b"app.test"), ("connection", b"close")]).expect("write request");
        let resumed = stream.conn.handshake_kind() == Some(HandshakeKind::Resumed);
        let response = http::read_response(&mut BufReader::new(&mut stream), "GET").expect("response");
        (response, resumed)
    }
}
