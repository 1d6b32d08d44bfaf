//! TLS for pgstrata's outbound HTTPS clients (the webhook dispatcher, the billing sync): turns a
//! TCP stream the caller has already connected (to an address it chose and vetted) into a TLS
//! stream for a server name.
//!
//! rustls with the ring provider; the server's certificate chain is checked against the Mozilla
//! roots of `webpki-roots` (no system store: the same roots on every machine), plus the extra
//! roots a caller adds (a test's own root, an operator's private CA). TLS 1.2 and 1.3, rustls'
//! safe defaults; ALPN offers `http/1.1` (both clients speak HTTP/1 through hyper).
//!
//! ```no_run
//! use pgstrata_core::https::TlsConnector;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsConnector::builder().build()?;
//! let tcp = tokio::net::TcpStream::connect("93.184.215.14:443").await?;
//! let stream = tls.connect("example.com", tcp).await?;
//! # drop(stream); Ok(()) }
//! ```

use rustls::pki_types::pem::PemObject;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use rustls::pki_types::{CertificateDer, ServerName};
/// The client side of a TLS connection over a TCP stream.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Why TLS could not be set up or established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// An extra root certificate could not be read or is not a usable trust anchor.
    #[error("invalid root certificate: {0}")]
    InvalidRoot(String),
    /// The host is not a DNS name or an IP address TLS can check a certificate against.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The handshake failed (certificate not trusted, name mismatch, protocol error, I/O).
    #[error("TLS handshake with {server} failed: {reason}")]
    Handshake { server: String, reason: String },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Makes TLS client connections; cheap to clone (the configuration is shared).
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    extra_roots: usize,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("roots", &"webpki-roots")
            .field("extra_roots", &self.extra_roots)
            .finish()
    }
}

impl TlsConnector {
    /// A builder that starts from the webpki roots.
    pub fn builder() -> TlsConnectorBuilder {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        TlsConnectorBuilder {
            roots,
            extra_roots: 0,
            alpn: vec![b"http/1.1".to_vec()],
        }
    }

    /// Runs the TLS handshake over `tcp` for `server_name` (the URL's host: a DNS name, or an
    /// IP address, bracketed or not), which is both the SNI sent (for a DNS name) and the name
    /// the certificate must hold.
    pub async fn connect(&self, server_name: &str, tcp: TcpStream) -> Result<TlsStream, HttpsError> {
        let name = server_name_of(server_name)?;
        self.inner.connect(name, tcp).await.map_err(|e| HttpsError::Handshake {
            server: server_name.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// The roots and options of a [`TlsConnector`].
#[derive(Debug)]
pub struct TlsConnectorBuilder {
    roots: rustls::RootCertStore,
    extra_roots: usize,
    alpn: Vec<Vec<u8>>,
}

impl TlsConnectorBuilder {
    /// Also trusts the root certificate `der` (DER bytes).
    pub fn add_root_der(mut self, der: &[u8]) -> Result<Self, HttpsError> {
        self.roots
            .add(CertificateDer::from(der.to_vec()))
            .map_err(|e| HttpsError::InvalidRoot(e.to_string()))?;
        self.extra_roots += 1;
        Ok(self)
    }

    /// Also trusts every certificate of the PEM text `pem` (at least one).
    pub fn add_roots_pem(mut self, pem: &[u8]) -> Result<Self, HttpsError> {
        let certs = pem_certificates(pem)?;
        for cert in certs {
            self.roots
                .add(cert)
                .map_err(|e| HttpsError::InvalidRoot(e.to_string()))?;
            self.extra_roots += 1;
        }
        Ok(self)
    }

    /// The ALPN protocols offered, in order of preference (default `http/1.1`; empty: none).
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    pub fn build(self) -> Result<TlsConnector, HttpsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Config(e.to_string()))?
            .with_root_certificates(self.roots)
            .with_no_client_auth();
        config.alpn_protocols = self.alpn;
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
            extra_roots: self.extra_roots,
        })
    }
}

/// The certificates of a PEM text, in order (an error when there is none or one is broken).
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpsError::InvalidRoot(e.to_string()))?;
    if certs.is_empty() {
        return Err(HttpsError::InvalidRoot("no CERTIFICATE in the PEM text".to_owned()));
    }
    Ok(certs)
}

/// The TLS server name of a URL's host: a DNS name, or an IP address (`[::1]` as `::1`).
pub fn server_name_of(host: &str) -> Result<ServerName<'static>, HttpsError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| HttpsError::ServerName(host.to_owned()))
}

/// A client connection that is plain TCP (`http://`) or TLS over TCP (`https://`): one type for
/// a client that speaks both.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum MaybeTlsStream {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl MaybeTlsStream {
    /// The TCP stream underneath (for its addresses, or socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// The ALPN protocol the server chose, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

/// hyper's client takes the stream as it is (the webhook dispatcher, the outbox's HTTP sink).
impl hyper_util::client::legacy::connect::Connection for MaybeTlsStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(server_name_of("example.com").unwrap(), ServerName::DnsName(_)));
        assert!(matches!(server_name_of("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name_of("[::1]").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name_of("bad name!"), Err(HttpsError::ServerName(n)) if n == "bad name!"));
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        assert!(matches!(pem_certificates(b"not pem"), Err(HttpsError::InvalidRoot(_))));
        assert!(matches!(
            TlsConnector::builder().add_root_der(b"\x30\x03junk"),
            Err(HttpsError::InvalidRoot(_))
        ));
    }
}
