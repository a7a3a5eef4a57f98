//! TLS on the main port (README "TLS"): with `RELAY_TLS_CERT` and `RELAY_TLS_KEY` set, every connection is
//! `https://` or `wss://`; the HTTP and WebSocket code above runs unchanged over [`stream::TlsStream`].
//!
//! The certificate is loaded at start (a bad file stops the start, naming its setting) and again on
//! [`TlsCell::reload`] (SIGHUP): a connection takes the current configuration once, when it is accepted, so a
//! reload reaches new connections and leaves open ones alone, and a reload that fails keeps the old certificate.

pub mod stream;

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use monoio::net::TcpStream;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSettings;
use crate::http::request::HttpError;
use crate::metrics::Counter;
use crate::runtime::core::Core;
use crate::server::http_conn;
use stream::TlsStream;

const CERT_FIELD: &str = "RELAY_TLS_CERT (--tls-cert)";
const KEY_FIELD: &str = "RELAY_TLS_KEY (--tls-key)";

/// The only application protocol offered: relay speaks HTTP/1.1 (and WebSocket over it), not h2.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The server's TLS configuration, replaced whole on reload.
pub struct TlsCell {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsCell {
    /// Loads the certificate chain and key; the error names the setting whose file is at fault.
    pub fn load(settings: &TlsSettings) -> Result<TlsCell, String> {
        let config = server_config(settings)?;
        Ok(TlsCell {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration for a connection being accepted (read once per connection, never per read or write).
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads both files; on an error the current certificate stays and the error names the setting.
    pub fn reload(&self) -> Result<(), String> {
        let config = Arc::new(server_config(&self.settings)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }
}

/// A rustls server configuration from PEM files: the certificate chain (leaf first) and a PKCS#8, PKCS#1 (RSA) or
/// SEC1 (EC) private key.
pub fn server_config(settings: &TlsSettings) -> Result<ServerConfig, String> {
    let cert_path = settings.cert.display();
    let key_path = settings.key.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{CERT_FIELD}: {}", pem_error(&cert_path, e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{CERT_FIELD}: {cert_path} holds no PEM certificate"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| format!("{KEY_FIELD}: {}", pem_error(&key_path, e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!("{KEY_FIELD}: {key_path} does not fit the certificate in {cert_path}: {e}")
        })?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    // Resumption by stateless tickets: a reconnecting client skips the certificate signature, and no session cache
    // is shared (and locked) between the cores.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS: {e}"))?;
    Ok(config)
}

fn pem_error(path: &impl std::fmt::Display, e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read {path}: {e}"),
        pem::Error::NoItemsFound => {
            format!(
                "{path} holds no PEM item of the expected kind (certificate, or PKCS#8/RSA/EC private key)"
            )
        }
        e => format!("{path} is not valid PEM: {e}"),
    }
}

/// Serves one accepted connection over TLS. A failed or slow handshake just closes it (logged at debug: a port
/// scanner must not flood the log).
pub async fn serve(core: Rc<Core>, tcp: TcpStream, config: Arc<ServerConfig>) {
    let limits = &core.shared.config.limits;
    // The whole handshake (and a plain-HTTP client's answer) must be over within the time a request head gets: a
    // client that opens connections and stalls holds nothing for longer.
    let handshake = accept(tcp, config, limits.http_write_timeout);
    let done = monoio::time::timeout(limits.http_read_timeout, handshake).await;
    let stream = match done.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())) {
        Ok(s) => s,
        Err(e) => {
            crate::debug!("tls handshake failed: {e}");
            core.metrics().inc(Counter::ConnectionErrors);
            return;
        }
    };
    http_conn::serve(core, stream).await;
}

async fn accept(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    write_limit: Duration,
) -> io::Result<TlsStream<rustls::ServerConnection>> {
    // The handshake's flights are separate writes: without this, Nagle would hold the first response back until
    // the client acknowledged the session tickets.
    tcp.set_nodelay(true)?;
    if plain_http(&tcp).await? {
        // A common mistake (http:// or ws:// to a TLS port): say so, in plain HTTP, instead of a TLS alert.
        let mut out = Vec::new();
        let e = HttpError::Malformed("plain HTTP sent to the TLS port; use https:// or wss://");
        http_conn::refuse(&mut tcp, &mut out, e, write_limit).await;
        return Err(io::Error::other("plain HTTP on the TLS port"));
    }
    let session = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = TlsStream::new(tcp, session);
    stream.handshake().await?;
    Ok(stream)
}

/// Whether the client's first byte starts an HTTP method rather than a TLS record (a handshake record starts with
/// 0x16). Peeked, so the handshake still reads it.
async fn plain_http(tcp: &TcpStream) -> io::Result<bool> {
    tcp.readable(false).await?;
    let mut first = 0u8;
    // SAFETY: a one-byte peek into a local; MSG_DONTWAIT, so it never blocks whatever the fd's mode.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            (&mut first as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    Ok(n == 1 && first.is_ascii_uppercase())
}
