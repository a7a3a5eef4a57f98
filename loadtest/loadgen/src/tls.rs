//! `--tls`: WebSocket and REST connections over TLS (wss://, https://), to measure what TLS costs a server.
//!
//! The TLS stream is relay's own (`relay::server::tls::stream`, rustls over monoio), used here on the client side.
//! [`Stream`] and its halves are a plain socket or a TLS one; without `--tls` every connection is `Plain` and
//! behaves exactly as before. Every connection makes a full handshake (no session resumption), so a connect rate
//! over TLS includes the certificate signature, as a first connect does.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use relay::server::tls::stream::{TlsReadHalf, TlsStream, TlsWriteHalf};
use relay::server::transport::Transport;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, IpAddr, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

/// How connections verify the server: a CA file, or not at all (`--insecure`).
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// `ca`: PEM file of the certificates to trust; `None` trusts any certificate (signatures are still checked).
    pub fn new(ca: Option<&str>) -> Result<TlsClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = match ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("--tls-ca {path}: {e}"))?
                {
                    let cert = cert.map_err(|e| format!("--tls-ca {path}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--tls-ca {path}: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("--tls-ca {path} holds no certificate"));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Runs the handshake on a connected socket to `ip`.
    pub async fn connect(&self, tcp: TcpStream, ip: std::net::Ipv4Addr) -> io::Result<Stream> {
        let name = ServerName::IpAddress(IpAddr::from(std::net::IpAddr::V4(ip)));
        let session = ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        let mut stream = TlsStream::new(tcp, session);
        stream.handshake().await?;
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// Wraps `tcp` in TLS when `tls` is set.
pub async fn wrap(
    tls: Option<&TlsClient>,
    tcp: TcpStream,
    ip: std::net::Ipv4Addr,
) -> io::Result<Stream> {
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(t) => t.connect(tcp, ip).await,
    }
}

/// `--insecure`: any certificate is accepted; the handshake signatures are still verified, so the client does
/// the same work as one that checks a chain.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<ClientConnection>>),
}

pub enum ReadHalf {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(TlsReadHalf<ClientConnection>),
}

pub enum WriteHalf {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(TlsWriteHalf<ClientConnection>),
}

impl Stream {
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let (r, w) = (*s).into_halves();
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.as_raw_fd(),
        }
    }
}

/// One dispatch per operation, to the plain or the TLS stream.
macro_rules! dispatch {
    ($enum:ident, $self:ident, $s:ident => $e:expr) => {
        match $self {
            $enum::Plain($s) => $e,
            $enum::Tls($s) => $e,
        }
    };
}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(Stream, self, s => s.read(buf).await)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(Stream, self, s => s.readv(buf).await)
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(Stream, self, s => s.write(buf).await)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(Stream, self, s => s.writev(buf).await)
    }

    async fn flush(&mut self) -> io::Result<()> {
        dispatch!(Stream, self, s => s.flush().await)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        dispatch!(Stream, self, s => s.shutdown().await)
    }
}

impl AsyncReadRent for ReadHalf {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(ReadHalf, self, s => s.read(buf).await)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(ReadHalf, self, s => s.readv(buf).await)
    }
}

impl AsyncWriteRent for WriteHalf {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(WriteHalf, self, s => s.write(buf).await)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        dispatch!(WriteHalf, self, s => s.writev(buf).await)
    }

    async fn flush(&mut self) -> io::Result<()> {
        dispatch!(WriteHalf, self, s => s.flush().await)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        dispatch!(WriteHalf, self, s => s.shutdown().await)
    }
}
