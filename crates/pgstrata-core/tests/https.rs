//! `pgstrata_core::https` against a local rustls server: the handshake completes with the test
//! root, checks the name, sends SNI and ALPN, and fails without the root.
//!
//! The fixtures under tests/fixtures/tls were made once with the openssl command line (the
//! root's key was thrown away):
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key.pem \
//!   -out ca.pem -days 36500 -subj "/CN=pgstrata test root" \
//!   -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
//! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key.pem \
//!   -out server.csr -subj "/CN=localhost"
//! printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n%s\n' \
//!   extendedKeyUsage=serverAuth 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' > server.ext
//! openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key.pem -CAcreateserial \
//!   -out server.pem -days 36500 -extfile server.ext
//! ```
#![cfg(feature = "https")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_core::https::{HttpsError, MaybeTlsStream, TlsConnector, pem_certificates};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CA: &[u8] = include_bytes!("fixtures/tls/ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("fixtures/tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("fixtures/tls/server.key.pem");

/// What the server saw of one connection: the SNI and the ALPN protocol it agreed.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// A TLS server on loopback that answers each connection's first line with "echo: " + it, and
/// reports what it saw.
async fn server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Result<Seen, String>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pem_certificates(SERVER_CERT).unwrap(),
            PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let (_, conn) = tls.get_ref();
                        let seen = Seen {
                            sni: conn.server_name().map(str::to_owned),
                            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                        };
                        let _ = tx.send(Ok(seen));
                        let mut buf = [0u8; 64];
                        let n = tls.read(&mut buf).await.unwrap_or(0);
                        let mut answer = b"echo: ".to_vec();
                        answer.extend_from_slice(&buf[..n]);
                        let _ = tls.write_all(&answer).await;
                        let _ = tls.shutdown().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn with_test_root() -> TlsConnector {
    TlsConnector::builder().add_roots_pem(CA).unwrap().build().unwrap()
}

#[tokio::test]
async fn handshake_with_the_test_root_by_name_and_by_address() {
    let (addr, mut seen) = server().await;
    let tls = with_test_root();

    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = MaybeTlsStream::Tls(tls.connect("localhost", tcp).await.unwrap());
    assert!(stream.is_tls());
    assert_eq!(
        stream.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN offers http/1.1 only"
    );
    stream.write_all(b"hello").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"echo: hello");
    let s = seen.recv().await.unwrap().unwrap();
    assert_eq!(s.sni.as_deref(), Some("localhost"), "SNI is the URL's host");
    assert_eq!(s.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // An address: checked against the certificate's IP SAN; no SNI is sent for an address.
    for host in ["127.0.0.1"] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut stream = tls.connect(host, tcp).await.unwrap();
        stream.write_all(b"ip").await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"echo: ip");
        let s = seen.recv().await.unwrap().unwrap();
        assert_eq!(s.sni, None);
    }
}

#[tokio::test]
async fn webpki_roots_alone_do_not_trust_the_test_root() {
    let (addr, _seen) = server().await;
    let tls = TlsConnector::builder().build().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = tls.connect("localhost", tcp).await.unwrap_err();
    match err {
        HttpsError::Handshake { server, reason } => {
            assert_eq!(server, "localhost");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_name_the_certificate_does_not_hold_is_refused() {
    let (addr, _seen) = server().await;
    let tls = with_test_root();
    for host in ["example.com", "127.0.0.2"] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = tls.connect(host, tcp).await.unwrap_err();
        match err {
            HttpsError::Handshake { server, reason } => {
                assert_eq!(server, host);
                assert!(reason.contains("not valid for name"), "{reason}");
            }
            other => panic!("expected a handshake error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_bad_server_name_fails_before_any_byte_is_sent() {
    let (addr, _seen) = server().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = with_test_root().connect("not a host", tcp).await.unwrap_err();
    assert!(
        matches!(err, HttpsError::ServerName(ref h) if h == "not a host"),
        "{err:?}"
    );
}
