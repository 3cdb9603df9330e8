//! Shared by the MySQL and PostgreSQL test binaries: the test users' password,
//! which a reason must never show, and the server certificate with the TLS cases
//! both servers must pass.

use checkers::Verdict;
use checkers::spec::Tls;

use crate::support::check::{assert_down_hiding, down};
use crate::support::pki::{Leaf, Pki};

/// The password of every test user.
pub const PASSWORD: &str = "s3cret-Pw!";

/// Asserts down for a reason containing `needle` and not the password.
#[track_caller]
pub fn assert_down_with(v: &Verdict, needle: &str) {
    assert_down_hiding(v, needle, PASSWORD);
}

/// The server's certificate, for 127.0.0.1 and db.example.org.
pub fn server_leaf(pki: &Pki) -> Leaf {
    pki.leaf("server", &["127.0.0.1", "db.example.org"], false)
}

/// TLS verified against the test CA, to a server presenting [`server_leaf`]:
/// `run` is one attempt with the given TLS options.
pub async fn tls_verification<F, Fut>(pki: &Pki, run: F)
where
    F: Fn(Tls) -> Fut,
    Fut: Future<Output = Verdict>,
{
    let ca = pki.tls();
    assert_eq!(run(ca.clone()).await, Verdict::Up);
    let named = Tls {
        server_name: Some("db.example.org".into()),
        ..ca.clone()
    };
    assert_eq!(run(named).await, Verdict::Up);
    let misnamed = Tls {
        server_name: Some("other.example.org".into()),
        ..ca
    };
    assert_down_with(
        &run(misnamed).await,
        "TLS: certificate not valid for name \"other.example.org\"",
    );
    assert_eq!(run(Tls::default()).await, down("TLS: unknown issuer"));
    let unverified = Tls {
        verify: false,
        ..Tls::default()
    };
    assert_eq!(run(unverified).await, Verdict::Up);
}
