//! Shared by the IMAP and POP3 test binaries: a private dovecot (Debian packages
//! `dovecot-imapd`, `dovecot-pop3d`) started by the test on loopback ports, and a
//! scripted mail server for the misbehaving cases.

#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::daemon::{Daemon, free_port, localhost, program};
use crate::http_support::{Leaf, hostile, set_mode};

/// The test user of every dovecot started here.
pub const USER: &str = "alice";
/// Its password; a reason must never contain it.
pub const PASSWORD: &str = "pw-7Hq2-zX";

/// A dovecot of its own: config, state, logs and mail in a tempdir; IMAP, IMAPS,
/// POP3 and POP3S on loopback ports; the master in the foreground as our child.
pub struct Dovecot {
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    daemon: Daemon,
}

impl Dovecot {
    /// Starts dovecot serving `leaf` and waits until every port greets.
    pub fn start(dir: &Path, leaf: &Leaf) -> Dovecot {
        let dovecot = program("/usr/sbin/dovecot", "dovecot-core");
        program("/usr/lib/dovecot/imap", "dovecot-imapd");
        program("/usr/lib/dovecot/pop3", "dovecot-pop3d");
        // Login processes run as dovenull, mail processes as nobody.
        set_mode(dir, 0o755);
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).expect("create the mail directory");
        set_mode(&mail, 0o777);
        let users = dir.join("users");
        std::fs::write(&users, format!("{USER}:{{PLAIN}}{PASSWORD}\n")).expect("users");
        let [imap, imaps, pop3, pop3s] = [(); 4].map(|()| free_port());
        let conf = dir.join("dovecot.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
listen = 127.0.0.1
protocols = imap pop3
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain login
disable_plaintext_auth = no
# A wrong password is answered at once, not after the default 2 s.
auth_failure_delay = 0
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
",
                cert = leaf.cert_pem.display(),
                key = leaf.key_pem.display(),
                users = users.display(),
            ),
        )
        .expect("write dovecot.conf");
        let mut cmd = Command::new(dovecot);
        cmd.arg("-F").arg("-c").arg(&conf);
        let mut daemon = Daemon::start(cmd, &dir.join("dovecot.out"));
        daemon.wait_until("dovecot", || {
            greets(imap, b"* OK") && greets(pop3, b"+OK") && accepts(imaps) && accepts(pop3s)
        });
        Dovecot {
            imap: localhost(imap),
            imaps: localhost(imaps),
            pop3: localhost(pop3),
            pop3s: localhost(pop3s),
            daemon,
        }
    }

    /// The daemon's own log and its stdout, for a failing assertion.
    pub fn log(&self, dir: &Path) -> String {
        let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
        format!("{}{log}", self.daemon.log())
    }
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(localhost(port)).is_ok()
}

/// Whether 127.0.0.1:`port` greets with `prefix` (readiness probe).
fn greets(port: u16, prefix: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(localhost(port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = vec![0u8; prefix.len()];
    stream.read_exact(&mut buf).is_ok() && buf == prefix
}

/// What a scripted server received, one command line per entry.
pub type Received = Arc<Mutex<Vec<String>>>;

/// A scripted server: sends `greeting`, then answers each command line with the
/// reply of the first matching prefix (case-insensitive). With `tagged` (IMAP) the
/// first word of a command is its tag: prefixes match what follows it, and `TAG`
/// in a reply becomes the tag. Closes on an unknown command or after the reply to
/// LOGOUT or QUIT.
pub async fn scripted(
    greeting: &'static str,
    replies: &'static [(&'static str, &'static str)],
    tagged: bool,
) -> (SocketAddr, Received) {
    let received = Received::default();
    let log = received.clone();
    let addr = hostile(move |stream: TcpStream| {
        let log = log.clone();
        async move {
            let mut io = BufReader::new(stream);
            if io.get_mut().write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
            let mut line = String::new();
            while matches!(io.read_line(&mut line).await, Ok(n) if n > 0) {
                let full = line.trim_end().to_owned();
                log.lock().expect("log").push(full.clone());
                let (tag, command) = match (tagged, full.split_once(' ')) {
                    (true, Some((tag, rest))) => (tag, rest),
                    _ => ("", full.as_str()),
                };
                let command = command.to_ascii_uppercase();
                let Some((_, reply)) = replies.iter().find(|(p, _)| command.starts_with(p)) else {
                    return;
                };
                let reply = reply.replace("TAG", tag);
                if io.get_mut().write_all(reply.as_bytes()).await.is_err()
                    || command == "LOGOUT"
                    || command == "QUIT"
                {
                    return;
                }
                line.clear();
            }
        }
    })
    .await;
    (addr, received)
}

/// A server that accepts and never says a word.
pub async fn silent() -> SocketAddr {
    hostile(|stream: TcpStream| async move {
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await
}
