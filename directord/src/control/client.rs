//! The `directorctl` side of the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Request, Response};

/// Sends one request and reads its response.
pub fn call(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach directord at {} (is it running, and are you root or in the directord group?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    let n = reader.read_line(&mut answer)?;
    if n == 0 {
        bail!("directord closed the connection without answering");
    }
    serde_json::from_str(&answer).with_context(|| format!("directord answered garbage: {answer:?}"))
}
