//! Shared by the IMAP and POP3 test binaries: a private dovecot (Debian packages
//! `dovecot-imapd`, `dovecot-pop3d`) started by the test on loopback ports.

#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::support::daemon::{Daemon, accepts, free_port, greets, localhost, program, set_mode};
use crate::support::pki::Leaf;

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
            greets(localhost(imap), b"* OK")
                && greets(localhost(pop3), b"+OK")
                && accepts(localhost(imaps))
                && accepts(localhost(pop3s))
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
