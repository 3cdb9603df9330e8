//! The TLS client of every check over TLS (HTTPS, SMTP STARTTLS, FTPS, IMAP, POP3,
//! NNTP, LDAP, MySQL, PostgreSQL).
//!
//! rustls with the *ring* provider. A [`Client`] is built once per check (held by
//! its `Prepared`) and reused by every attempt; each attempt still does a full
//! handshake: session resumption is off, so every attempt verifies the certificate
//! the server presents now (a certificate that expired since the last attempt is
//! noticed at once). The handshake keeps to the attempt's deadline, and a failed
//! one is a reason ("TLS: unknown issuer", "TLS: no handshake within 500 ms").

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::spec::{Tls, TlsMode};
use crate::{Error, Stop, down};

/// A check's TLS client: the connector, and the name to present and verify when
/// the options (or the HTTP Host) fix it; else each attempt uses the address it
/// connects to.
#[derive(Clone)]
pub(crate) struct Client {
    connector: TlsConnector,
    name: Option<ServerName<'static>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client for `tls`; `host` is the HTTP Host, for HTTPS. A bad
    /// `server_name` is a config problem: reported now, not per attempt.
    pub(crate) fn new(tls: &Tls, host: Option<&str>) -> Result<Client, Error> {
        let name = if tls.server_name.is_some() || host.is_some() {
            // The address is not used when a name is given.
            Some(server_name(tls, host, Ipv4Addr::UNSPECIFIED.into())?)
        } else {
            None
        };
        Ok(Client {
            connector: connector(tls)?,
            name,
        })
    }

    /// The handshake of an attempt that connected to `addr`.
    pub(crate) fn handshake(&self, addr: IpAddr) -> Handshake<'_> {
        Handshake {
            connector: &self.connector,
            name: self
                .name
                .clone()
                .unwrap_or_else(|| ServerName::IpAddress(addr.into())),
        }
    }

    /// A copy that resumes its own TLS sessions (kept in memory), for a second
    /// connection that must resume the first one's session (an FTP data
    /// connection). Made per attempt, so that the first connection of each attempt
    /// still does a full, verified handshake.
    pub(crate) fn resuming(&self) -> Client {
        let mut config = ClientConfig::clone(self.connector.config());
        config.resumption = rustls::client::Resumption::in_memory_sessions(4);
        Client {
            connector: TlsConnector::from(Arc::new(config)),
            name: self.name.clone(),
        }
    }
}

/// The client of a check with TLS `options`, if any (the name fixed by
/// `server_name` alone).
pub(crate) fn client(options: Option<&Tls>) -> Result<Option<Client>, Error> {
    options.map(|o| Client::new(o, None)).transpose()
}

/// The TLS client of an attempt and the name to present and verify.
#[derive(Clone)]
pub(crate) struct Handshake<'a> {
    pub(crate) connector: &'a TlsConnector,
    pub(crate) name: ServerName<'static>,
}

/// The handshakes of an attempt of a check with a [`TlsMode`]: at connect
/// (implicit TLS), or after the protocol's STARTTLS-style command.
pub(crate) struct Handshakes<'a> {
    pub(crate) implicit: Option<Handshake<'a>>,
    pub(crate) starttls: Option<Handshake<'a>>,
}

/// The handshakes in `mode`, with the check's `client` (built when `mode` has
/// TLS), for an attempt that connected to `addr`.
pub(crate) fn handshakes<'a>(
    mode: &TlsMode,
    client: Option<&'a Client>,
    addr: IpAddr,
) -> Handshakes<'a> {
    let handshake = client.map(|c| c.handshake(addr));
    match mode {
        TlsMode::Implicit(_) => Handshakes {
            implicit: handshake,
            starttls: None,
        },
        TlsMode::StartTls(_) => Handshakes {
            implicit: None,
            starttls: handshake,
        },
        TlsMode::None => Handshakes {
            implicit: None,
            starttls: None,
        },
    }
}

/// The handshake over `tcp` by `deadline` ("TLS: unknown issuer", "TLS: no
/// handshake within 500 ms", with the attempt's whole `timeout`).
pub(crate) async fn handshake(
    tcp: TcpStream,
    tls: Handshake<'_>,
    deadline: Instant,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, Stop> {
    match timeout_at(deadline, tls.connector.connect(tls.name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => down(describe_tls_error(&e)),
        Err(_) => down(format!(
            "TLS: no handshake within {} ms",
            timeout.as_millis()
        )),
    }
}

/// The client for one check's TLS options: trust anchors from `ca_file` (PEM) or
/// the system store; with `verify = false`, any certificate is accepted (the
/// handshake, including the server's proof that it holds the key, still happens).
pub(crate) fn connector(tls: &Tls) -> Result<TlsConnector, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsConfig {
            message: e.to_string(),
        })?;
    let mut config = if tls.verify {
        let roots = match &tls.ca_file {
            Some(path) => load_ca_file(path)?,
            None => system_roots()?,
        };
        // Built here rather than by `with_root_certificates` so that an unusable
        // root store is reported now, not at the first attempt.
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::TlsConfig {
                message: e.to_string(),
            })?;
        builder.with_webpki_verifier(verifier).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    };
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name for SNI and certificate verification: `tls.server_name`, else the HTTP
/// host (without a port), else the connect address.
fn server_name(tls: &Tls, host: Option<&str>, addr: IpAddr) -> Result<ServerName<'static>, Error> {
    let name = match (&tls.server_name, host) {
        (Some(name), _) => name.as_str(),
        (None, Some(host)) => strip_port(host),
        (None, None) => return Ok(ServerName::IpAddress(addr.into())),
    };
    ServerName::try_from(name)
        .map(|n| n.to_owned())
        .map_err(|_| Error::TlsConfig {
            message: format!("invalid TLS server name {name:?}"),
        })
}

/// "example.org:8443" → "example.org", "[2001:db8::1]:443" → "2001:db8::1".
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // One colon: name:port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// A failed handshake as the operator should read it: "TLS: certificate expired",
/// "TLS: certificate not valid for name \"x\"", "TLS: unknown issuer".
pub(crate) fn describe_tls_error(e: &io::Error) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => "TLS: connection closed during the handshake".into(),
            io::ErrorKind::ConnectionReset => "TLS: connection reset during the handshake".into(),
            _ => format!("TLS: {e}"),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => format!("TLS: {}", describe_certificate_error(c)),
        rustls::Error::AlertReceived(alert) => format!("TLS: the server sent alert {alert:?}"),
        other => format!("TLS: {other}"),
    }
}

fn describe_certificate_error(e: &CertificateError) -> String {
    match e {
        CertificateError::Expired => "certificate expired".into(),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "certificate expired {} ago",
            human_age(time.as_secs().saturating_sub(not_after.as_secs()))
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not yet valid".into()
        }
        CertificateError::NotValidForName => "certificate not valid for the name".into(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let expected = match expected {
                ServerName::DnsName(n) => n.as_ref().to_string(),
                ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
                other => format!("{other:?}"),
            };
            if presented.is_empty() {
                format!("certificate not valid for name \"{expected}\" (it names none)")
            } else {
                let names: Vec<String> = presented
                    .iter()
                    .map(|p| format!("\"{}\"", presented_name(p)))
                    .collect();
                format!(
                    "certificate not valid for name \"{expected}\" (it is for {})",
                    names.join(", ")
                )
            }
        }
        CertificateError::UnknownIssuer => "unknown issuer".into(),
        CertificateError::Revoked => "certificate revoked".into(),
        CertificateError::BadSignature => "certificate has a bad signature".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate not valid for server authentication".into()
        }
        other => format!("invalid certificate: {other}"),
    }
}

/// webpki shows a certificate's names as `DnsName("x")` or `IpAddress(192.0.2.1)`.
fn presented_name(p: &str) -> &str {
    p.split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(p)
        .trim_matches('"')
}

fn human_age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, Error> {
    let load_error = |source: io::Error| Error::LoadCa {
        path: path.to_path_buf(),
        source,
    };
    let pem = std::fs::read(path).map_err(load_error)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| load_error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        roots
            .add(cert)
            .map_err(|e| load_error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    }
    if roots.is_empty() {
        return Err(load_error(io::Error::new(
            io::ErrorKind::InvalidData,
            "no PEM certificate in the file",
        )));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(Error::TlsConfig {
            message: format!(
                "no trust anchors in the system store{detail}; install ca-certificates or set ca_file"
            ),
        });
    }
    Ok(roots)
}

/// `verify = false`: any certificate, any name, any date. The server must still
/// sign the handshake with the certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_prefers_option_then_host_then_address() {
        let addr: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut tls = Tls::default();
        let name = |tls: &Tls, host| server_name(tls, host, addr).expect("name");
        assert_eq!(
            name(&tls, None),
            ServerName::IpAddress(addr.into()),
            "no host: the connect address"
        );
        assert_eq!(
            name(&tls, Some("www.example.org:8443")),
            ServerName::try_from("www.example.org").expect("dns")
        );
        assert_eq!(
            name(&tls, Some("[2001:db8::1]:443")),
            ServerName::try_from("2001:db8::1").expect("ip")
        );
        tls.server_name = Some("api.example.org".into());
        assert_eq!(
            name(&tls, Some("www.example.org")),
            ServerName::try_from("api.example.org").expect("dns")
        );
        tls.server_name = Some("bad name!".into());
        assert!(server_name(&tls, None, addr).is_err());
    }

    #[test]
    fn missing_ca_file_is_a_checker_error() {
        let tls = Tls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Tls::default()
        };
        let err = connector(&tls).err();
        assert!(matches!(err, Some(Error::LoadCa { .. })), "{err:?}");
    }

    #[test]
    fn certificate_errors_read_well() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let expired = wrap(rustls::Error::InvalidCertificate(
            CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000_000)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    1_000_000 - 3 * 86_400,
                )),
            },
        ));
        assert_eq!(
            describe_tls_error(&expired),
            "TLS: certificate expired 3 days ago"
        );
        let issuer = wrap(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert_eq!(describe_tls_error(&issuer), "TLS: unknown issuer");
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(
            describe_tls_error(&eof),
            "TLS: connection closed during the handshake"
        );
    }
}
