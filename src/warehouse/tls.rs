//! TLS for database connections (PostgreSQL and MySQL/MariaDB, warehouse and
//! state store), on rustls with the aws-lc-rs provider already in the build.
//! It owns the URL's `sslmode` and `sslrootcert` parameters (and MySQL's
//! `ssl-mode`/`ssl-ca` spellings), what each mode checks, the adapter
//! tokio-postgres connects through, the options mysql_async takes, and the
//! messages for a refused TLS session or a rejected certificate. It opens no
//! connection of its own except MySQL's `verify-ca` probe, and never sees a
//! password: callers pass URLs already redacted for messages.
//!
//! Modes, as in libpq: `disable` (plain), `prefer` (TLS when the server offers
//! it, plain only when the server refuses TLS; nothing verified; the default),
//! `require` (TLS or fail; nothing verified unless `sslrootcert` is given,
//! then the chain is, as libpq does), `verify-ca` (the chain up to the root
//! certificate) and `verify-full` (the chain and the host name).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::{Error, Result};

/// The URL parameters this module reads; connection code removes them before
/// the driver sees the URL.
pub const PARAMS: &[&str] = &["sslmode", "ssl-mode", "ssl_mode", "sslrootcert", "ssl-ca", "ssl_ca"];

/// What a connection asks of TLS (`sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The modes' names as written in a URL.
pub const MODES: &str = "disable, prefer, require, verify-ca, verify-full";

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// libpq's names, and MySQL's (`DISABLED`, `PREFERRED`, `REQUIRED`,
    /// `VERIFY_CA`, `VERIFY_IDENTITY`) in any case.
    fn parse(v: &str) -> Option<Mode> {
        match v.to_ascii_lowercase().replace('_', "-").as_str() {
            "disable" | "disabled" => Some(Mode::Disable),
            "prefer" | "preferred" => Some(Mode::Prefer),
            "require" | "required" => Some(Mode::Require),
            "verify-ca" => Some(Mode::VerifyCa),
            "verify-full" | "verify-identity" => Some(Mode::VerifyFull),
            _ => None,
        }
    }
}

/// Where trusted root certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store (`sslrootcert=system`, and the default
    /// for the verifying modes).
    System,
    /// A PEM file of one or more certificates.
    File(PathBuf),
}

/// What the server's certificate is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// A connection's TLS settings, read from its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub mode: Mode,
    /// `sslrootcert`, when given.
    pub roots: Option<Roots>,
}

impl Tls {
    /// Reads `sslmode` (default `prefer`) and `sslrootcert` from `url`;
    /// `shown` is the URL as messages may show it.
    pub fn from_url(url: &str, shown: &str) -> Result<Tls> {
        let mut mode = Mode::Prefer;
        let mut roots = None;
        for (k, v) in crate::secret::url_params(url) {
            match k {
                "sslmode" | "ssl-mode" | "ssl_mode" => {
                    mode = Mode::parse(v).ok_or_else(|| {
                        Error::user(format!("invalid {k}={v} in {shown}: use one of {MODES} (default prefer)"))
                    })?;
                }
                "sslrootcert" | "ssl-ca" | "ssl_ca" => {
                    let v = crate::secret::decode_userinfo(v);
                    roots = match v.as_str() {
                        "" => None,
                        "system" => Some(Roots::System),
                        _ => Some(Roots::File(PathBuf::from(v))),
                    };
                }
                _ => {}
            }
        }
        Ok(Tls { mode, roots })
    }

    fn check(&self) -> Check {
        match self.mode {
            Mode::Disable | Mode::Prefer => Check::Nothing,
            Mode::Require if self.roots.is_none() => Check::Nothing,
            Mode::Require | Mode::VerifyCa => Check::Chain,
            Mode::VerifyFull => Check::ChainAndName,
        }
    }

    /// The mode as messages name it (`require` with a root certificate
    /// checks the chain, as `verify-ca` does).
    fn label(&self) -> String {
        match (self.mode, &self.roots) {
            (Mode::Require, Some(_)) => "sslmode=require with sslrootcert, which checks the CA".into(),
            (m, _) => format!("sslmode={}", m.name()),
        }
    }

    /// The trusted roots, as messages name them.
    fn ca(&self) -> String {
        match &self.roots {
            Some(Roots::File(p)) => format!("the CA in {}", p.display()),
            _ => "a CA in the system's trust store".into(),
        }
    }

    /// The trusted root certificates (none when nothing is verified).
    fn root_certs(&self) -> Result<Vec<CertificateDer<'static>>> {
        if self.check() == Check::Nothing {
            return Ok(Vec::new());
        }
        match &self.roots {
            Some(Roots::File(path)) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io("read the sslrootcert file", path, e))?;
                let mut certs = Vec::new();
                for c in CertificateDer::pem_slice_iter(&bytes) {
                    certs.push(c.map_err(|e| {
                        Error::user(format!("the sslrootcert file {} is not valid PEM: {e}", path.display()))
                    })?);
                }
                if certs.is_empty() {
                    return Err(Error::user(format!(
                        "the sslrootcert file {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                        path.display()
                    )));
                }
                Ok(certs)
            }
            None | Some(Roots::System) => system_roots().map_err(|e| Error::user(e.clone())),
        }
    }

    /// The rustls configuration for this mode (`None` for `disable`).
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>> {
        if self.mode == Mode::Disable {
            return Ok(None);
        }
        let roots = match self.check() {
            Check::Nothing => None,
            _ => {
                let mut store = RootCertStore::empty();
                let certs = self.root_certs()?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(Error::user(format!("{} holds no usable root certificate", self.ca())));
                }
                Some(Arc::new(store))
            }
        };
        let provider = provider();
        let verifier = Verifier { check: self.check(), roots, provider: provider.clone() };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("the TLS provider has no protocol versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    /// tokio-postgres's mode: it knows disable, prefer and require; the
    /// checks beyond are this module's verifier.
    pub fn pg_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            Mode::Disable => tokio_postgres::config::SslMode::Disable,
            Mode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The connector tokio-postgres connects (and cancels) through.
    pub fn postgres(&self) -> Result<PgTls> {
        Ok(PgTls { config: self.client_config()? })
    }

    /// The message for a connection to `host` that failed in its TLS
    /// handshake or certificate check, when `err` is such a failure.
    pub fn explain(&self, err: &(dyn std::error::Error + 'static), host: &str) -> Option<String> {
        let e = find_rustls(err)?;
        use rustls::CertificateError as C;
        let mode = self.label();
        Some(match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => {
                    format!("the server's certificate is not signed by {} ({mode})", self.ca())
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    let names = match c {
                        C::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
                            let names: Vec<String> = presented.iter().map(|n| presented_name(n)).collect();
                            format!(" (it names {})", names.join(", "))
                        }
                        _ => String::new(),
                    };
                    format!(
                        "the server's certificate is not valid for the host name {host}{names} ({mode}); connect by a name the certificate holds, or use sslmode=verify-ca to check only the CA"
                    )
                }
                C::Expired | C::ExpiredContext { .. } => format!("the server's certificate has expired ({mode})"),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    format!("the server's certificate is not valid yet ({mode}); check the clocks")
                }
                other => format!("the server's certificate was rejected ({mode}): {other}"),
            },
            other => format!("the TLS handshake with the server failed ({mode}): {other}"),
        })
    }

    /// The message for a server that answered a TLS request with "no".
    pub fn refused(&self) -> String {
        format!(
            "the server does not accept TLS connections ({}); enable TLS on the server, or connect with sslmode=prefer or sslmode=disable",
            self.label()
        )
    }

    /// mysql_async's TLS options for a connection to `host:port`: `None`
    /// for `disable`, and for `prefer` towards a server that refused TLS
    /// before (this process does not ask it again). For `verify-ca` the
    /// server's certificate is fetched first (and checked against the CA),
    /// so the real session can be told which of the certificate's names to
    /// expect: mysql_async itself only checks a chain together with a name.
    pub async fn mysql(&self, host: &str, port: u16, shown: &str) -> Result<Option<mysql_async::SslOpts>> {
        match self.mode {
            Mode::Disable => return Ok(None),
            Mode::Prefer if refused_before(host, port) => return Ok(None),
            _ => {}
        }
        provider();
        let opts = mysql_async::SslOpts::default();
        Ok(Some(match self.check() {
            Check::Nothing => opts.with_danger_accept_invalid_certs(true),
            check => {
                let roots = self.root_certs()?;
                let mut opts = opts
                    .with_disable_built_in_roots(true)
                    .with_root_certs(roots.into_iter().map(|c| c.as_ref().to_vec().into()).collect());
                if check == Check::Chain {
                    let name = self.mysql_cert_name(host, port, shown).await?;
                    opts = opts.with_danger_tls_hostname_override(Some(name));
                }
                opts
            }
        }))
    }

    /// Remembers that the MySQL server at `host:port` refused TLS (for
    /// `prefer`).
    pub fn mysql_refused(&self, host: &str, port: u16) {
        let mut refused = REFUSED.lock().expect("refused servers");
        if !refused.iter().any(|(h, p)| h == host && *p == port) {
            refused.push((host.to_string(), port));
        }
    }

    /// Opens a TLS session to the MySQL server at `host:port` (its
    /// `SSLRequest`), checks the certificate's chain and returns a name it
    /// holds (a wildcard's label filled in).
    async fn mysql_cert_name(&self, host: &str, port: u16, shown: &str) -> Result<String> {
        let at = format!("{host}:{port}");
        let failed = |e: io::Error| Error::external(format!("cannot reach the MySQL server at {at}: {e}"), true);
        let mut s = tokio::net::TcpStream::connect((host, port)).await.map_err(failed)?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.map_err(failed)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut hello = vec![0u8; len];
        s.read_exact(&mut hello).await.map_err(failed)?;
        if hello.first() == Some(&0xff) {
            let text = String::from_utf8_lossy(hello.get(3..).unwrap_or_default()).into_owned();
            return Err(Error::external(format!("the MySQL server at {at} refused the connection: {text}"), true));
        }
        // Protocol 10: version, NUL-terminated server version, thread id (4),
        // scramble (8), filler (1), then the low capability bytes.
        let caps = hello
            .iter()
            .skip(1)
            .position(|&b| b == 0)
            .map(|nul| 1 + nul + 1 + 4 + 8 + 1)
            .and_then(|at| hello.get(at..at + 2))
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| Error::external(format!("the server at {at} does not speak the MySQL protocol"), false))?;
        const CLIENT_SSL: u32 = 0x800;
        if u32::from(caps) & CLIENT_SSL == 0 {
            return Err(Error::external(format!("cannot connect to {shown}: {}", self.refused()), false));
        }
        // SSLRequest: capabilities, max packet, character set, 23 zeros.
        let flags: u32 = 0x1 | 0x200 | CLIENT_SSL | 0x8000;
        let mut req = vec![32, 0, 0, 1];
        req.extend_from_slice(&flags.to_le_bytes());
        req.extend_from_slice(&(16u32 << 20).to_le_bytes());
        req.push(45);
        req.extend_from_slice(&[0; 23]);
        s.write_all(&req).await.map_err(failed)?;
        let config = self.client_config()?.expect("verify-ca has a TLS configuration");
        let name = ServerName::try_from(host.to_string()).unwrap_or(ServerName::try_from("localhost").expect("a name"));
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, s).await.map_err(|e| {
            let msg = self.explain(&e, host).unwrap_or_else(|| format!("the TLS handshake failed: {e}"));
            Error::external(format!("cannot connect to {shown}: {msg}"), false)
        })?;
        let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
        let leaf =
            leaf.ok_or_else(|| Error::external(format!("the MySQL server at {at} sent no certificate"), false))?;
        let parsed = ParsedCertificate::try_from(&leaf).map_err(|e| {
            Error::external(format!("the MySQL server at {at} sent a certificate that is not valid: {e}"), false)
        })?;
        let probe = ServerName::try_from("sluice-probe.invalid").expect("a valid name");
        let names = match rustls::client::verify_server_name(&parsed, &probe) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => presented,
            _ => Vec::new(),
        };
        names
            .iter()
            .map(|n| presented_name(n))
            .map(|n| match n.strip_prefix("*.") {
                Some(rest) => format!("sluice-probe.{rest}"),
                None => n,
            })
            .next()
            .ok_or_else(|| {
                Error::external(
                    format!(
                        "the MySQL server at {at} has a certificate without a subjectAltName, which {} cannot check; reissue it with one",
                        self.label()
                    ),
                    false,
                )
            })
    }
}

/// A name from rustls's list of a certificate's names (`DnsName("db")`
/// there), as a user writes it.
fn presented_name(n: &str) -> String {
    match (n.find('('), n.strip_suffix(')')) {
        (Some(open), Some(inner)) => inner[open + 1..].trim_matches('"').to_string(),
        _ => n.to_string(),
    }
}

/// MySQL servers (host, port) that refused TLS under `prefer`.
static REFUSED: Mutex<Vec<(String, u16)>> = Mutex::new(Vec::new());

fn refused_before(host: &str, port: u16) -> bool {
    REFUSED.lock().expect("refused servers").iter().any(|(h, p)| h == host && *p == port)
}

/// Installs the crypto provider (aws-lc-rs, which object_store's reqwest
/// already builds) as the process default, so code that asks rustls for the
/// default (mysql_async, oracledb) finds it even when another provider is
/// compiled in too. Connections here call it themselves; the binary calls it
/// first thing.
pub fn install_provider() {
    provider();
}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    })
    .clone()
}

/// The operating system's trusted roots, read once.
fn system_roots() -> std::result::Result<Vec<CertificateDer<'static>>, &'static String> {
    static ROOTS: OnceLock<std::result::Result<Vec<CertificateDer<'static>>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
                Err(format!(
                    "no trusted root certificates in the system's store{why}: give the server's CA with sslrootcert=PATH"
                ))
            } else {
                Ok(found.certs)
            }
        })
        .as_ref()
        .cloned()
}

/// The rustls error inside `err`'s chain (I/O errors wrap it out of reach
/// of `source()`).
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            cur = Some(inner);
            continue;
        }
        cur = e.source();
    }
    None
}

/// Checks a server's certificate as the mode asks; the handshake's
/// signatures are always checked.
#[derive(Debug)]
struct Verifier {
    check: Check,
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = self.roots.as_ref().filter(|_| self.check != Check::Nothing) else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check == Check::ChainAndName {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres's TLS connector over tokio-rustls (used for `prefer` and
/// stronger; `disable` never asks it).
#[derive(Clone)]
pub struct PgTls {
    config: Option<Arc<ClientConfig>>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        // A Unix socket has no host name; the server refuses TLS there.
        let name = if domain.is_empty() { "localhost" } else { domain };
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host {name}: {e}")))?;
        Ok(PgTlsConnect { config: self.config.clone(), name })
    }
}

pub struct PgTlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: ServerName<'static>,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS was asked for on a connection with sslmode=disable"))?;
            let s = tokio_rustls::TlsConnector::from(config).connect(self.name, stream).await?;
            Ok(PgTlsStream(s))
        })
    }
}

/// A TLS session with a PostgreSQL server.
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    /// `tls-server-end-point` (RFC 5929), so SCRAM authenticates over
    /// `SCRAM-SHA-256-PLUS`: a man in the middle cannot relay the login
    /// even when the certificate is not verified (`prefer`, `require`).
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        let leaf = self.0.get_ref().1.peer_certificates().and_then(|c| c.first());
        match leaf.and_then(|c| server_end_point(c.as_ref())) {
            Some(hash) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(hash),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

/// One DER element: its tag, its content and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The hash of a certificate for `tls-server-end-point`: by the hash of its
/// signature algorithm, SHA-256 for MD5 and SHA-1; `None` for algorithms
/// without one hash (Ed25519, RSA-PSS), which leaves SCRAM unbound.
fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, body, _) = der(cert)? else { return None };
    let (SEQUENCE, _, rest) = der(body)? else { return None };
    let (SEQUENCE, algorithm, _) = der(rest)? else { return None };
    let (0x06, oid, _) = der(algorithm)? else { return None };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let bits = match oid {
        [r @ .., 0x04 | 0x05 | 0x0b] if r == RSA => 256,
        [r @ .., 0x0c] if r == RSA => 384,
        [r @ .., 0x0d] if r == RSA => 512,
        [e @ .., 0x01] if e == ECDSA => 256,
        [e @ .., 0x03, 0x02] if e == ECDSA => 256,
        [e @ .., 0x03, 0x03] if e == ECDSA => 384,
        [e @ .., 0x03, 0x04] if e == ECDSA => 512,
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modes_and_roots_from_urls() {
        let t = |u: &str| Tls::from_url(u, "shown").unwrap();
        assert_eq!(t("postgres://h/db"), Tls { mode: Mode::Prefer, roots: None });
        assert_eq!(t("postgres://h/db?sslmode=verify-full&sslrootcert=/a%20b/ca.pem").mode, Mode::VerifyFull);
        assert_eq!(
            t("postgres://h/db?sslmode=verify-full&sslrootcert=/a%20b/ca.pem").roots,
            Some(Roots::File("/a b/ca.pem".into()))
        );
        assert_eq!(t("mysql://h/db?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem").mode, Mode::VerifyFull);
        assert_eq!(t("mysql://h/db?ssl-mode=REQUIRED").mode, Mode::Require);
        assert_eq!(t("mysql://h/db?ssl_mode=disabled").mode, Mode::Disable);
        assert_eq!(t("postgres://h/db?sslrootcert=system").roots, Some(Roots::System));
        let e = Tls::from_url("postgres://h/db?sslmode=verify", "postgres://h/db").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid sslmode=verify in postgres://h/db: use one of disable, prefer, require, verify-ca, verify-full (default prefer)"
        );
    }

    #[test]
    fn require_with_a_root_checks_the_chain() {
        let t = Tls { mode: Mode::Require, roots: Some(Roots::File("/x".into())) };
        assert_eq!(t.check(), Check::Chain);
        assert_eq!(Tls { mode: Mode::Require, roots: None }.check(), Check::Nothing);
        assert_eq!(Tls { mode: Mode::Prefer, roots: Some(Roots::System) }.check(), Check::Nothing);
    }

    /// A certificate's outline: tbsCertificate, signatureAlgorithm (`oid`),
    /// signature.
    fn cert_with(oid: &[u8]) -> Vec<u8> {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![0x30, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    #[test]
    fn channel_binding_hashes_by_the_signature_algorithm() {
        use sha2::Digest;
        let ecdsa_sha384 = cert_with(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(server_end_point(&ecdsa_sha384), Some(sha2::Sha384::digest(&ecdsa_sha384).to_vec()));
        // SHA-1 becomes SHA-256 (RFC 5929).
        let rsa_sha1 = cert_with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(server_end_point(&rsa_sha1), Some(sha2::Sha256::digest(&rsa_sha1).to_vec()));
        // Ed25519 has no hash of its own: no binding.
        assert_eq!(server_end_point(&cert_with(&[0x2b, 0x65, 0x70])), None);
        assert_eq!(server_end_point(b"\x30\x05garbage"), None);
    }

    #[test]
    fn names_are_shown_as_written() {
        assert_eq!(presented_name("DnsName(\"db.example.com\")"), "db.example.com");
        assert_eq!(presented_name("localhost"), "localhost");
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let t = Tls { mode: Mode::VerifyCa, roots: Some(Roots::File("/nonexistent/ca.pem".into())) };
        let e = t.client_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
