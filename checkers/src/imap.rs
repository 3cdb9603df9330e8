//! IMAP check (RFC 9051 / RFC 3501): greeting, optionally STARTTLS, optionally
//! LOGIN, LOGOUT.
//!
//! A small client over [`crate::session`]; the part of IMAP a health check needs is
//! the greeting, tagged command/response and CAPABILITY.
//!
//! - The greeting must be `* OK` or `* PREAUTH`; `* BYE` (too many connections,
//!   shutting down) is down with its text.
//! - Commands are tagged `a1`, `a2`, ...; untagged lines (`* CAPABILITY`, `* OK
//!   [ALERT]`, ...) before the tagged response are read and skipped. A `* BYE`
//!   before it is down with its text. Literals (`{n}` at a line end) are skipped,
//!   bounded by [`MAX_REPLY`] for one response.
//! - STARTTLS: CAPABILITY must list it; `STARTTLS` must be answered `OK`; then the
//!   handshake, refusing bytes sent before it (see [`crate::session`]). After a
//!   `* PREAUTH` greeting there is nothing to upgrade (RFC 3501 6.2.1): down.
//! - LOGIN with quoted user and password. A server that lists LOGINDISABLED does
//!   not take it (over plain text, typically): down with that reason rather than
//!   sending the password in the clear. After `* PREAUTH` the session is already
//!   authenticated and LOGIN is skipped. A user or password with a line break or
//!   NUL is refused when the check is prepared; other non-ASCII text goes as UTF-8
//!   inside the quotes, as Dovecot and Cyrus take it.
//! - LOGOUT: once the rest went well, a server that closes without its `* BYE` and
//!   tagged OK, or does not answer in time, is still up; one that answers NO or BAD
//!   is down.

use crate::session::{Session, fits_a_line, shown, shown_bytes};
use crate::spec::{Imap, Login, MAX_REPLY};
use crate::tls::{self, Handshakes};
use crate::{Error, Stop, Target, Verdict, down, verdict};

#[derive(Debug)]
pub(crate) struct Prepared {
    /// With TLS (implicit or STARTTLS): the client, built once.
    tls: Option<tls::Client>,
}

impl Prepared {
    pub(crate) fn new(spec: &Imap) -> Result<Prepared, Error> {
        if let Some(login) = &spec.login {
            check_quotable("user", &login.user)?;
            check_quotable("password", login.password.expose())?;
        }
        let tls = tls::client(spec.tls.tls())?;
        Ok(Prepared { tls })
    }
}

/// A quoted string cannot hold CR, LF or NUL (RFC 9051 `quoted`); the value itself
/// is not shown (it may be the password).
fn check_quotable(what: &str, value: &str) -> Result<(), Error> {
    if !fits_a_line(value) {
        return Err(Error::Option {
            message: format!(
                "the IMAP {what} contains a line break or NUL, which LOGIN cannot send"
            ),
        });
    }
    Ok(())
}

/// `"value"` with `\` and `"` escaped.
fn quoted(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if matches!(c, '\\' | '"') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

pub(crate) async fn probe(p: &Prepared, spec: &Imap, t: &Target) -> Result<Verdict, Error> {
    verdict(session(p, spec, t).await)
}

async fn session(p: &Prepared, spec: &Imap, t: &Target) -> Result<(), Stop> {
    let Handshakes { implicit, starttls } = tls::handshakes(&spec.tls, p.tls.as_ref(), t.addr.ip());
    let mut conn = Conn::new(Session::connect(t, implicit).await?);
    let greeting = conn.greeting().await?;
    let preauth = greeting.preauth;
    let mut capabilities = greeting.capabilities;

    if let Some(handshake) = starttls {
        if preauth {
            return down("greeting is PREAUTH: no STARTTLS possible".to_owned());
        }
        let listed = match capabilities.take() {
            Some(listed) => listed,
            None => conn.capability().await?,
        };
        if !offers(&listed, "STARTTLS") {
            return down("server does not offer STARTTLS".to_owned());
        }
        conn.command("STARTTLS", "STARTTLS", "answered").await?;
        conn = Conn {
            io: conn.io.upgrade(handshake).await?,
            ..conn
        };
        // What the server listed before TLS no longer holds (RFC 3501 6.2.1).
        capabilities = None;
    }

    if let (Some(login), false) = (&spec.login, preauth) {
        let listed = match capabilities.take() {
            Some(listed) => listed,
            None => conn.capability().await?,
        };
        if offers(&listed, "LOGINDISABLED") {
            let how = if conn.io.is_tls() {
                "LOGIN is disabled (LOGINDISABLED)"
            } else {
                "server refuses LOGIN over plain text (LOGINDISABLED): use TLS"
            };
            return down(how.to_owned());
        }
        conn.login(login).await?;
    }
    conn.logout().await
}

/// Whether a CAPABILITY list holds `name` (case-insensitive).
fn offers(listed: &[String], name: &str) -> bool {
    listed.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// What the greeting says.
struct Greeting {
    preauth: bool,
    /// From a `[CAPABILITY ...]` response code.
    capabilities: Option<Vec<String>>,
}

/// A tagged response's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    No,
    Bad,
}

/// The session, with the tag counter.
struct Conn {
    io: Session,
    tags: u32,
}

impl Conn {
    fn new(io: Session) -> Conn {
        Conn { io, tags: 0 }
    }

    async fn greeting(&mut self) -> Result<Greeting, Stop> {
        let line = self.response("greeting").await?;
        let Some(rest) = untagged(&line) else {
            return not_imap("greeting", &line);
        };
        let (word, text) = split_word(rest);
        let preauth = if word.eq_ignore_ascii_case(b"OK") {
            false
        } else if word.eq_ignore_ascii_case(b"PREAUTH") {
            true
        } else if word.eq_ignore_ascii_case(b"BYE") {
            return down(format!("greeting: * BYE {}", shown_bytes(text)));
        } else {
            return not_imap("greeting", &line);
        };
        Ok(Greeting {
            preauth,
            capabilities: capability_code(text),
        })
    }

    /// `CAPABILITY`: the listed capabilities.
    async fn capability(&mut self) -> Result<Vec<String>, Stop> {
        match self.command("CAPABILITY", "CAPABILITY", "answered").await? {
            Some(listed) => Ok(listed),
            None => down("CAPABILITY answered OK without listing any".to_owned()),
        }
    }

    async fn login(&mut self, login: &Login) -> Result<(), Stop> {
        let line = format!(
            "LOGIN {} {}",
            quoted(&login.user),
            quoted(login.password.expose())
        );
        self.command(&line, "LOGIN", "rejected:").await?;
        Ok(())
    }

    /// LOGOUT at the end of a good session: only a tagged NO or BAD is down (see
    /// the module doc).
    async fn logout(&mut self) -> Result<(), Stop> {
        let tag = self.next_tag();
        if self.io.write_line(&format!("{tag} LOGOUT")).await.is_err() {
            return Ok(());
        }
        loop {
            let Ok(line) = self.response("reply to LOGOUT").await else {
                return Ok(());
            };
            if let Some((status, text)) = tagged(&line, &tag) {
                return match status {
                    Some(Status::Ok) => Ok(()),
                    _ => down(format!("LOGOUT answered {}", shown_bytes(text))),
                };
            }
        }
    }

    fn next_tag(&mut self) -> String {
        self.tags += 1;
        format!("a{}", self.tags)
    }

    /// Sends `command` with the next tag; skips untagged lines up to the tagged
    /// response, which must be OK. `name` names the command in reasons ("LOGIN":
    /// the line itself, with the password, is never shown), `verb` says what a NO
    /// or BAD did ("LOGIN rejected: NO ..."). Returns the last capability list
    /// seen (`* CAPABILITY` or an OK `[CAPABILITY ...]`).
    async fn command(
        &mut self,
        command: &str,
        name: &str,
        verb: &str,
    ) -> Result<Option<Vec<String>>, Stop> {
        let tag = self.next_tag();
        self.io.send(&format!("{tag} {command}"), name).await?;
        let awaited = format!("reply to {name}");
        let mut capabilities = None;
        loop {
            let line = self.response(&awaited).await?;
            if let Some(rest) = untagged(&line) {
                let (word, text) = split_word(rest);
                if word.eq_ignore_ascii_case(b"CAPABILITY") {
                    capabilities = Some(words(text));
                } else if word.eq_ignore_ascii_case(b"BYE") {
                    return down(format!("{awaited}: * BYE {}", shown_bytes(text)));
                }
                continue;
            }
            if line.starts_with(b"+") {
                return down(format!(
                    "{awaited}: unexpected continuation \"{}\"",
                    shown_bytes(&line)
                ));
            }
            match tagged(&line, &tag) {
                Some((Some(Status::Ok), text)) => {
                    let (_, text) = split_word(text);
                    return Ok(capability_code(text).or(capabilities));
                }
                Some((Some(_), text)) => {
                    return down(format!("{name} {verb} {}", shown_bytes(text)));
                }
                Some((None, _)) | None => return not_imap(&awaited, &line),
            }
        }
    }

    /// One response line, its literals skipped (a literal's `{n}` ends a line and
    /// the line goes on after its n bytes); at most [`MAX_REPLY`] bytes in all.
    async fn response(&mut self, awaited: &str) -> Result<Vec<u8>, Stop> {
        let mut line = self.io.line(awaited).await?;
        let mut total = line.len();
        while let Some(n) = literal_len(&line) {
            total = total.saturating_add(n);
            if total > MAX_REPLY {
                return down(format!(
                    "{awaited} too long (over {MAX_REPLY} bytes with its literals)"
                ));
            }
            self.io
                .skip(n)
                .await
                .map_err(|e| Stop::Down(self.io.read_reason(e, awaited)))?;
            let more = self.io.line(awaited).await?;
            total += more.len();
            line.push(b' ');
            line.extend_from_slice(&more);
        }
        Ok(line)
    }
}

fn not_imap<T>(awaited: &str, line: &[u8]) -> Result<T, Stop> {
    down(format!(
        "{awaited} is not IMAP: \"{}\"",
        shown(String::from_utf8_lossy(line).trim_end())
    ))
}

/// `* rest` → `rest`.
fn untagged(line: &[u8]) -> Option<&[u8]> {
    line.strip_prefix(b"* ")
}

/// `tag STATUS text` → the status (`None`: neither OK, NO nor BAD) and the text
/// with the status word; `None` if the line does not carry `tag`.
fn tagged<'a>(line: &'a [u8], tag: &str) -> Option<(Option<Status>, &'a [u8])> {
    let rest = line.strip_prefix(tag.as_bytes())?.strip_prefix(b" ")?;
    let (word, _) = split_word(rest);
    let status = if word.eq_ignore_ascii_case(b"OK") {
        Some(Status::Ok)
    } else if word.eq_ignore_ascii_case(b"NO") {
        Some(Status::No)
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Some(Status::Bad)
    } else {
        None
    };
    Some((status, rest))
}

/// The first space-separated word and the rest.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

fn words(s: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(s)
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The list in a `[CAPABILITY ...]` response code at the start of `text`.
fn capability_code(text: &[u8]) -> Option<Vec<String>> {
    let code = text.strip_prefix(b"[")?;
    let end = code.iter().position(|&b| b == b']')?;
    let (word, list) = split_word(&code[..end]);
    word.eq_ignore_ascii_case(b"CAPABILITY")
        .then(|| words(list))
}

/// The length of a literal announced at the end of a line: `{12}` or `{12+}`.
fn literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::{Secret, TlsMode};

    #[test]
    fn quoting() {
        assert_eq!(quoted("alice"), "\"alice\"");
        assert_eq!(quoted(r#"p"a\ss"#), r#""p\"a\\ss""#);
        let spec = |password: &str| Imap {
            tls: TlsMode::None,
            login: Some(Login {
                user: "alice".into(),
                password: Secret::inline(password),
            }),
        };
        assert!(Prepared::new(&spec("s3cret w/ space")).is_ok());
        let err = Prepared::new(&spec("s3cret\r\na2 DELETE INBOX")).expect_err("refused");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn responses() {
        assert_eq!(
            tagged(b"a3 NO [AUTHENTICATIONFAILED] failed", "a3"),
            Some((Some(Status::No), &b"NO [AUTHENTICATIONFAILED] failed"[..]))
        );
        assert_eq!(tagged(b"a31 OK", "a3"), None);
        assert_eq!(tagged(b"a3 MAYBE", "a3").map(|(s, _)| s), Some(None));
        assert_eq!(
            capability_code(b"[CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready"),
            Some(vec![
                "IMAP4rev1".to_owned(),
                "STARTTLS".to_owned(),
                "LOGINDISABLED".to_owned()
            ])
        );
        assert_eq!(capability_code(b"[ALERT] hi"), None);
        assert_eq!(capability_code(b"Dovecot ready."), None);
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {12}"), Some(12));
        assert_eq!(literal_len(b"a1 LOGIN {5+}"), Some(5));
        assert_eq!(literal_len(b"* OK {x}"), None);
        assert_eq!(literal_len(b"* OK {}"), None);
        assert_eq!(literal_len(b"* OK {99999999999}"), None);
        assert_eq!(literal_len(b"* OK done"), None);
    }
}
