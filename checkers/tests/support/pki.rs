//! A test PKI (rcgen): a CA and the server certificates it signs, as PEM files for
//! real daemons and as rustls values for servers written in the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkers::spec::Tls;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A CA and the certificates it signs, as PEM files in a directory.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A server certificate and its key, as files and as rustls values.
pub struct Leaf {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "directord test CA");
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
        Pki {
            ca,
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The check's TLS options verifying against this CA.
    pub fn tls(&self) -> Tls {
        Tls {
            ca_file: Some(self.ca_file()),
            ..Tls::default()
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as
    /// `file`.crt and `file`.key: valid since 2020 or, `expired`, only until 2021.
    pub fn leaf(&self, file: &str, names: &[&str], expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "directord test server");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        if expired {
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let cert_pem = self.dir.join(format!("{file}.crt"));
        let key_pem = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_pem, cert.pem()).expect("write cert");
        std::fs::write(&key_pem, key.serialize_pem()).expect("write key");
        Leaf {
            cert_pem,
            key_pem,
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

/// A TLS acceptor (ring) serving `leaf`.
pub fn acceptor(leaf: &Leaf) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .expect("server config");
    TlsAcceptor::from(Arc::new(config))
}
