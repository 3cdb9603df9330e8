use std::net::SocketAddr;
use std::path::PathBuf;

/// The checker itself cannot work. A real server that fails its check is not an
/// error but a [`crate::Verdict::Down`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the CA file {path}")]
    LoadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the TLS client: {message}")]
    TlsConfig { message: String },
    #[error("cannot open a checking socket to {target}")]
    Socket {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad DNS query name {name:?}: {message}")]
    DnsName { name: String, message: String },
    #[error("bad check option: {message}")]
    Option { message: String },
    #[error("cannot get random bytes from the system: {message}")]
    Random { message: String },
}
