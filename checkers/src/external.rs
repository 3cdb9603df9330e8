//! External command: exit status 0 means up.
//!
//! One attempt runs the program directly (no shell) with its arguments, then the real
//! server's address and port as two more; the environment adds `DIRECTORD_REAL_IP`,
//! `DIRECTORD_REAL_PORT`, `DIRECTORD_CONNECT_IP` and `DIRECTORD_CONNECT_PORT`. stdin
//! is /dev/null; the first [`OUTPUT_KEPT`] bytes of stdout and stderr are kept for
//! the reason. The program runs in a process group of its own, and that whole group
//! is killed (SIGKILL) when it exits, at the timeout, or when the attempt is dropped:
//! nothing a check starts outlives it.

use std::os::unix::process::ExitStatusExt as _;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Command;
use tokio::time::{Instant, sleep_until};

use crate::{Error, Target, Verdict, spec::External};

/// Bytes of stdout and of stderr kept by [`run`]; the rest is read and thrown away so the
/// program never blocks on a full pipe.
pub const OUTPUT_KEPT: usize = 4096;
/// How long, after the program exited, the output may still take to arrive (a
/// descendant that left the group could hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_millis(50);
/// Longest output line quoted in a reason.
const LINE_SHOWN: usize = 200;

pub(crate) async fn probe(spec: &External, t: &Target) -> Result<Verdict, Error> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(Error::Option {
            message: "external check without a program".into(),
        });
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(t.real.ip().to_string())
        .arg(t.real.port().to_string())
        .env("DIRECTORD_REAL_IP", t.real.ip().to_string())
        .env("DIRECTORD_REAL_PORT", t.real.port().to_string())
        .env("DIRECTORD_CONNECT_IP", t.addr.ip().to_string())
        .env("DIRECTORD_CONNECT_PORT", t.addr.port().to_string());
    let finished = run(command, t.timeout)
        .await
        .map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
    Ok(match &finished.status {
        None => Verdict::Down(format!(
            "timed out after {} ms, killed",
            t.timeout.as_millis()
        )),
        Some(Ok(s)) if s.success() => Verdict::Up,
        Some(Ok(_)) => Verdict::Down(finished.failure()),
        Some(Err(e)) => Verdict::Down(format!("cannot wait for {program}: {e}")),
    })
}

/// How a program started by [`run`] ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: killed at the timeout.
    pub status: Option<std::io::Result<ExitStatus>>,
    /// The first [`OUTPUT_KEPT`] bytes of each.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// "exit status 3: no backend" / "killed by signal SIGSEGV" (the first line of
    /// stderr, else of stdout); "timed out" when it was killed at the timeout.
    pub fn failure(&self) -> String {
        match &self.status {
            Some(Ok(s)) => failed(*s, &self.stderr, &self.stdout),
            Some(Err(e)) => format!("cannot wait for it: {e}"),
            None => "timed out".into(),
        }
    }
}

/// Runs `command` (its program and arguments set) with stdin from /dev/null, in a
/// process group of its own, keeping the start of its output. The whole group is
/// killed (SIGKILL) when the program exits, at `timeout`, or when this future is
/// dropped: nothing it starts outlives it. Used by the external check and by
/// directord's notify scripts. An error: the program could not be started.
pub async fn run(mut command: Command, timeout: Duration) -> std::io::Result<Finished> {
    let deadline = Instant::now() + timeout;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()));

    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
    let status = {
        let mut output = pin!(async {
            tokio::join!(drain(out_pipe, &mut stdout), drain(err_pipe, &mut stderr))
        });
        let mut output_done = false;
        let mut status = None;
        let mut until = deadline;
        loop {
            tokio::select! {
                _ = &mut output, if !output_done => output_done = true,
                exited = child.wait(), if status.is_none() => {
                    // Its descendants go with it (and so release the pipes).
                    group.kill();
                    status = Some(exited);
                    until = until.min(Instant::now() + OUTPUT_GRACE);
                }
                () = sleep_until(until) => break,
            }
            if output_done && status.is_some() {
                break;
            }
        }
        status
    };
    // `group` drops here: killed if it was not yet (timeout).
    drop(group);
    if status.is_none() {
        // Reap it: killed with its group just above.
        let _ = child.wait().await;
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// The program's process group, killed once.
struct Group(Option<i32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH: nothing left in the group.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_KEPT`] bytes.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = [0; 1024];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let room = OUTPUT_KEPT - kept.len();
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// "exit status 3: no backend" / "killed by signal SIGSEGV".
fn failed(status: ExitStatus, stderr: &[u8], stdout: &[u8]) -> String {
    let mut reason = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => status.to_string(),
    };
    if let Some(line) = first_line(stderr).or_else(|| first_line(stdout)) {
        reason.push_str(": ");
        reason.push_str(&line);
    }
    reason
}

/// The first non-blank line, trimmed and bounded.
fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(match line.char_indices().nth(LINE_SHOWN) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_quotes_stderr_first_then_stdout() {
        let s = ExitStatus::from_raw(3 << 8);
        assert_eq!(
            failed(s, b"\n  no backend  \nmore\n", b"out"),
            "exit status 3: no backend"
        );
        assert_eq!(failed(s, b"", b"out\n"), "exit status 3: out");
        assert_eq!(failed(s, b"", b""), "exit status 3");
        assert_eq!(
            failed(ExitStatus::from_raw(11), b"", b""),
            "killed by signal SIGSEGV"
        );
    }

    #[test]
    fn a_long_line_is_cut() {
        let line = "é".repeat(300);
        let shown = first_line(line.as_bytes()).expect("a line");
        assert_eq!(shown.chars().count(), LINE_SHOWN + 3);
        assert!(shown.ends_with("..."));
    }
}
