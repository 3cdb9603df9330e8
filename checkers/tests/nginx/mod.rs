//! A real nginx (Debian package `nginx-light`) started from a config the test
//! writes, for the http tests and, through `http_support`, the checkers examples:
//! hence `super::support`, which names the support module in both.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::support::daemon::{Daemon, accepts, program, set_mode};

/// nginx in the foreground as our child, its pid file, logs and temp paths in
/// `dir`; stopped when dropped.
pub struct Nginx {
    _daemon: Daemon,
}

impl Nginx {
    /// `http_block` is the inside of `http { }`; the rest (pid, logs, temp paths in
    /// `dir`) is written here. Waits until every port in `ports` accepts.
    pub fn start(dir: &Path, workers: u32, http_block: &str, ports: &[SocketAddr]) -> Nginx {
        let nginx = program("/usr/sbin/nginx", "nginx-light");
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
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"]);
        // Errors in the config go to stderr, hence to this log.
        let mut daemon = Daemon::start(cmd, &dir.join("nginx.out"));
        daemon.wait_until("nginx", || ports.iter().all(|&port| accepts(port)));
        Nginx { _daemon: daemon }
    }
}
