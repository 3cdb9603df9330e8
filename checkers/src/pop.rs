//! POP3 check (RFC 1939, STLS from RFC 2595): greeting, optionally STLS, optionally
//! USER/PASS, QUIT.
//!
//! A small client over [`crate::session`]. Every reply used here is one line,
//! `+OK ...` or `-ERR ...`.
//!
//! - The greeting must be `+OK`; `-ERR` (busy, shutting down) is down with its text.
//! - STLS: a server that answers `-ERR` does not offer it: down. After `+OK` the
//!   handshake, refusing bytes sent before it (see [`crate::session`]).
//! - USER then PASS, each answered `+OK`; a `-ERR` to either is down with the
//!   server's text, never with the password.
//! - QUIT: once the rest went well, a server that closes without its `+OK`, or does
//!   not answer in time, is still up; one that answers `-ERR` is down.

use crate::session::{Session, fits_a_line, shown_bytes};
use crate::spec::{Login, Pop};
use crate::tls::{self, Handshakes};
use crate::{Error, Stop, Target, Verdict, down, verdict};

#[derive(Debug)]
pub(crate) struct Prepared {
    /// With TLS (implicit or STLS): the client, built once.
    tls: Option<tls::Client>,
}

impl Prepared {
    pub(crate) fn new(spec: &Pop) -> Result<Prepared, Error> {
        if let Some(login) = &spec.login {
            check_argument("user", &login.user)?;
            check_argument("password", login.password.expose())?;
        }
        let tls = tls::client(spec.tls.tls())?;
        Ok(Prepared { tls })
    }
}

/// A command argument cannot hold CR, LF or NUL; the value itself is not shown (it
/// may be the password).
fn check_argument(what: &str, value: &str) -> Result<(), Error> {
    if !fits_a_line(value) {
        return Err(Error::Option {
            message: format!("the POP3 {what} contains a line break or NUL, which cannot be sent"),
        });
    }
    Ok(())
}

pub(crate) async fn probe(p: &Prepared, spec: &Pop, t: &Target) -> Result<Verdict, Error> {
    verdict(session(p, spec, t).await)
}

async fn session(p: &Prepared, spec: &Pop, t: &Target) -> Result<(), Stop> {
    let Handshakes { implicit, starttls } = tls::handshakes(&spec.tls, p.tls.as_ref(), t.addr.ip());
    let mut io = Session::connect(t, implicit).await?;
    match reply(&mut io, "greeting").await? {
        Reply::Ok => {}
        Reply::Err(text) => return down(format!("greeting: -ERR {text}")),
    }
    if let Some(handshake) = starttls {
        command(&mut io, "STLS", "STLS", "answered").await?;
        io = io.upgrade(handshake).await?;
    }
    if let Some(login) = &spec.login {
        user_pass(&mut io, login).await?;
    }
    quit(&mut io).await
}

async fn user_pass(io: &mut Session, login: &Login) -> Result<(), Stop> {
    command(io, &format!("USER {}", login.user), "USER", "rejected:").await?;
    let pass = format!("PASS {}", login.password.expose());
    command(io, &pass, "PASS", "rejected:").await
}

/// QUIT at the end of a good session: only an explicit `-ERR` is down (see the
/// module doc).
async fn quit(io: &mut Session) -> Result<(), Stop> {
    if io.write_line("QUIT").await.is_err() {
        return Ok(());
    }
    match reply(io, "reply to QUIT").await {
        Ok(Reply::Err(text)) => down(format!("QUIT answered -ERR {text}")),
        Ok(Reply::Ok) | Err(_) => Ok(()),
    }
}

/// Sends `line` and reads a `+OK`. `name` names the command in reasons (the line
/// itself, with the password, is never shown); `verb` says what a `-ERR` did
/// ("PASS rejected: -ERR ...").
async fn command(io: &mut Session, line: &str, name: &str, verb: &str) -> Result<(), Stop> {
    io.send(line, name).await?;
    match reply(io, &format!("reply to {name}")).await? {
        Reply::Ok => Ok(()),
        Reply::Err(text) if name == "STLS" => down(format!(
            "server does not offer STLS: {name} {verb} -ERR {text}"
        )),
        Reply::Err(text) => down(format!("{name} {verb} -ERR {text}")),
    }
}

enum Reply {
    Ok,
    /// The text after `-ERR`, shown.
    Err(String),
}

async fn reply(io: &mut Session, awaited: &str) -> Result<Reply, Stop> {
    let line = io.line(awaited).await?;
    match parse(&line) {
        Some(reply) => Ok(reply),
        None => down(format!("{awaited} is not POP3: \"{}\"", shown_bytes(&line))),
    }
}

/// `+OK text` → Ok, `-ERR text` → Err(text); anything else is not POP3.
fn parse(line: &[u8]) -> Option<Reply> {
    let status_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (status, text) = line.split_at(status_end);
    if status.eq_ignore_ascii_case(b"+OK") {
        Some(Reply::Ok)
    } else if status.eq_ignore_ascii_case(b"-ERR") {
        Some(Reply::Err(shown_bytes(text)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::{Secret, TlsMode};

    #[test]
    fn replies() {
        assert!(matches!(parse(b"+OK Dovecot ready."), Some(Reply::Ok)));
        assert!(matches!(parse(b"+OK"), Some(Reply::Ok)));
        assert!(
            matches!(parse(b"-ERR [AUTH] Authentication failed."), Some(Reply::Err(t)) if t == "[AUTH] Authentication failed.")
        );
        assert!(parse(b"+OKAY").is_none());
        assert!(parse(b"* OK IMAP ready").is_none());
        assert!(parse(b"").is_none());
    }

    #[test]
    fn arguments_without_line_breaks() {
        let spec = |password: &str| Pop {
            tls: TlsMode::None,
            login: Some(Login {
                user: "alice".into(),
                password: Secret::inline(password),
            }),
        };
        assert!(Prepared::new(&spec("s3cret")).is_ok());
        let err = Prepared::new(&spec("s3cret\r\nDELE 1")).expect_err("refused");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
