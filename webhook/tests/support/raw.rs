//! Raw TLS clients that send what a slow or broken client would; shared by the slow-client
//! tests and the memory benchmark.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The first bytes of a TLS ClientHello: a handshake record header and the start of its body.
pub const HALF_A_CLIENT_HELLO: &[u8] =
    &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];

/// A request head cut in the middle of a header.
pub const HALF_A_HEAD: &[u8] = b"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Ty";

/// A whole request head, and the start of a body of 100,000 bytes.
pub const HALF_A_BODY: &[u8] = b"POST /mutate HTTP/1.1\r\nHost: webhook\r\n\
    Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"apiVersion\":";

/// A TLS client of HTTP/1.1 that trusts the CA `ca_pem` only.
pub fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("a PEM certificate");
    roots.add(ca).expect("a CA certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A connection to `addr` whose TLS handshake is done, and nothing more.
pub async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address");
    connector.connect(name, tcp).await
}
