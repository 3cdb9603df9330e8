//! Shared by the http test binaries: check builders, a test PKI (rcgen), a real
//! nginx child process, and small hostile servers.
#![allow(dead_code)] // each test binary uses its own part

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkers::spec::{Check, Connect, Health, Http, Method, Protocol};
use checkers::{Probe, Verdict};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A GET / check expecting 2xx, with a 2 s budget, changed by `edit`.
pub fn http_check(edit: impl FnOnce(&mut Http, &mut Check)) -> Check {
    let mut http = Http {
        tls: None,
        method: Method::Get,
        path: "/".into(),
        host: None,
        expect_status: vec![200..=299],
        expect_body: None,
        expect_digest: None,
        headers: Vec::new(),
        basic_auth: None,
    };
    let mut check = Check {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        rise: 1,
        fall: 1,
        retry: 0,
        retry_delay: Duration::ZERO,
        initial: Health::Down,
        connect: Connect::default(),
        protocol: Protocol::Ping,
    };
    edit(&mut http, &mut check);
    check.protocol = Protocol::Http(http);
    check
}

/// One attempt of `check` against `real`; a checker error fails the test.
pub async fn verdict(check: Check, real: SocketAddr) -> Verdict {
    let probe = Probe::new(check).expect("check prepares");
    probe.run(real).await.expect("the checker itself works")
}

#[track_caller]
pub fn assert_down(v: &Verdict, needle: &str) {
    match v {
        Verdict::Down(reason) => {
            // Shown with --nocapture: what an operator would read.
            eprintln!("down: {reason}");
            assert!(
                reason.contains(needle),
                "reason {reason:?} should contain {needle:?}"
            );
        }
        Verdict::Up => panic!("expected down with {needle:?}, got up"),
    }
}

pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A CA and the certificates it signs, as PEM files in a directory.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

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

    /// A server certificate for `names` (DNS names or IP addresses), valid from a
    /// year ago until `not_after` (default: in ten years).
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

/// Serves every connection on a loopback port with `serve`; the task ends with
/// the test's runtime.
pub async fn hostile<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Reads the request head (up to the blank line), so a server answers after it.
pub async fn read_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// A real nginx (Debian package `nginx-light` or `nginx`) started from `conf` as
/// a child; killed when dropped.
pub struct Nginx {
    child: Child,
    pub dir: PathBuf,
}

pub const NGINX_PACKAGE_HINT: &str = "nginx is not installed: these tests run the real nginx \
     (Debian: apt-get install nginx-light); CI installs it";

pub fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("{NGINX_PACKAGE_HINT}");
}

impl Nginx {
    /// `http_block` is the inside of `http { }`; the rest (pid, logs, temp paths in
    /// `dir`) is written here. Waits until every port in `ports` accepts.
    pub fn start(dir: &Path, workers: u32, http_block: &str, ports: &[SocketAddr]) -> Nginx {
        let d = dir.display();
        let conf = format!(
            "worker_processes {workers};\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             worker_rlimit_nofile 65536;\n\
             events {{ worker_connections 16384; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/tmp-body;\n\
               proxy_temp_path {d}/tmp-proxy;\n\
               fastcgi_temp_path {d}/tmp-fastcgi;\n\
               uwsgi_temp_path {d}/tmp-uwsgi;\n\
               scgi_temp_path {d}/tmp-scgi;\n\
               default_type text/plain;\n\
               {http_block}\n\
             }}\n"
        );
        // Workers may run as nobody: let them read the test's files.
        set_mode(dir, 0o755);
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            dir: dir.to_path_buf(),
        };
        let started = Instant::now();
        for port in ports {
            while std::net::TcpStream::connect(port).is_err() {
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    panic!("nginx exited with {status}: {log}");
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "nginx did not listen on {port} within 10 s"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
