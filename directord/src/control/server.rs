//! The `directord` side of the control socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{MAX_REQUEST, Response, parse_request};
use crate::supervisor::SupervisorHandle;

/// A bound control socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    group: Option<u32>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds the socket: mode 0660, owned by root and `group` (if that group exists).
    /// Refuses to start if another directord answers on the same path.
    pub fn bind(path: &Path, group: &str) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another directord is already listening on {}",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot bind control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid);
        if let Some(gid) = gid {
            nix::unistd::chown(path, None, Some(gid))
                .with_context(|| format!("cannot give {} to group {group}", path.display()))?;
            if let Some(dir) = path.parent() {
                let _ = nix::unistd::chown(dir, None, Some(gid));
            }
        } else {
            debug!(
                group,
                "control group does not exist; the socket is for root only"
            );
        }
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            group: gid.map(|g| g.as_raw()),
        })
    }

    /// Serves connections until cancelled.
    pub async fn serve(self, supervisor: SupervisorHandle, cancel: CancellationToken) {
        info!(socket = %self.path.display(), "control socket ready");
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    let sup = supervisor.clone();
                    let cancel = cancel.clone();
                    let group = self.group;
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, sup, group, cancel).await {
                            debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "control socket accept failed"),
            }
        }
    }
}

fn allowed(stream: &UnixStream, group: Option<u32>) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    let me = nix::unistd::geteuid().as_raw();
    cred.uid() == 0 || cred.uid() == me || group.is_some_and(|g| cred.gid() == g)
}

async fn connection(
    stream: UnixStream,
    supervisor: SupervisorHandle,
    group: Option<u32>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let permitted = allowed(&stream, group);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut limited = (&mut reader).take(MAX_REQUEST as u64 + 1);
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = limited.read_until(b'\n', &mut buf) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        let response = if !permitted {
            Response::error("permission denied: directorctl needs root or the directord group")
        } else if buf.len() > MAX_REQUEST {
            // Too long: answer, then drop the connection (the rest of the line is unread).
            let r = Response::error(format!("request longer than {MAX_REQUEST} bytes"));
            write_response(&mut write, &r).await?;
            return Ok(());
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => Response::error("request is not UTF-8"),
                Ok(line) => match parse_request(line) {
                    Err(e) => Response::error(e),
                    Ok(req) => supervisor.request(req).await,
                },
            }
        };
        write_response(&mut write, &response).await?;
    }
}

async fn write_response(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    r: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).unwrap_or_else(|_| r#"{"ok":false}"#.into());
    line.push('\n');
    write.write_all(line.as_bytes()).await
}
