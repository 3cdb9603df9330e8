//! NNTP check (RFC 3977): greeting, optionally TLS (STARTTLS, RFC 4642, or NNTPS
//! from the first byte), optionally GROUP, QUIT.
//!
//! - The greeting must be 200 (posting allowed) or 201 (no posting); 400 and 502
//!   (service unavailable) and anything else are down with the server's text.
//! - STARTTLS must be answered 382; a server without it (502, 580) is down.
//! - With a group: `MODE READER` first, as a mode-switching server (INN's innd)
//!   serves GROUP only after it. A server that does not know the command (500,
//!   501) is asked GROUP all the same; one that refuses reading (502) is down.
//!   `GROUP name` must be answered 211; 411 is "no such group".
//! - QUIT: once the session went well, only an explicit other reply than 205 is
//!   down; a server that closes at once, or does not answer in time, has served.
//! - Responses are single lines (none of these commands has a multi-line
//!   response), bounded by the session's line bound.

use crate::session::{Session, shown, shown_bytes};
use crate::spec::Nntp;
use crate::tls::{self, Handshakes};
use crate::{Error, Stop, Target, Verdict, down, verdict};

#[derive(Debug)]
pub(crate) struct Prepared {
    tls: Option<tls::Client>,
}

impl Prepared {
    pub(crate) fn new(spec: &Nntp) -> Result<Prepared, Error> {
        if let Some(group) = &spec.group
            && !is_group_name(group)
        {
            return Err(Error::Option {
                message: format!(
                    "NNTP group {group:?} is not a newsgroup name (printable, no spaces)"
                ),
            });
        }
        let tls = tls::client(spec.tls.tls())?;
        Ok(Prepared { tls })
    }
}

/// RFC 3977 3.1: a newsgroup name is printable UTF-8 without spaces or controls.
fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 497
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

pub(crate) async fn probe(p: &Prepared, spec: &Nntp, t: &Target) -> Result<Verdict, Error> {
    verdict(nntp_session(p, spec, t).await)
}

async fn nntp_session(p: &Prepared, spec: &Nntp, t: &Target) -> Result<(), Stop> {
    let Handshakes { implicit, starttls } = tls::handshakes(&spec.tls, p.tls.as_ref(), t.addr.ip());
    let mut s = Session::connect(t, implicit).await?;
    let greeting = response(&mut s, "greeting").await?;
    if !matches!(greeting.code, 200 | 201) {
        return down(format!(
            "greeting {} (expected 200 or 201)",
            greeting.code_and_text()
        ));
    }
    if let Some(handshake) = starttls {
        command(&mut s, "STARTTLS", "STARTTLS", &[382]).await?;
        s = s.upgrade(handshake).await?;
    }
    if let Some(group) = &spec.group {
        let mode = command(&mut s, "MODE READER", "MODE READER", &[]).await?;
        if !matches!(mode.code, 200 | 201 | 500 | 501) {
            return down(format!(
                "MODE READER answered {} (expected 200 or 201)",
                mode.code_and_text()
            ));
        }
        let what = format!("GROUP {}", shown(group));
        let reply = command(&mut s, &format!("GROUP {group}"), &what, &[]).await?;
        match reply.code {
            211 => {}
            411 => {
                return down(format!("{what}: no such group ({})", reply.code_and_text()));
            }
            _ => {
                return down(format!(
                    "{what} answered {} (expected 211)",
                    reply.code_and_text()
                ));
            }
        }
    }
    quit(&mut s).await
}

/// One response line: its code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    code: u16,
    text: String,
}

impl Response {
    /// "411 No such group nosuch", or "411" alone; the text cut.
    fn code_and_text(&self) -> String {
        match shown(self.text.trim()) {
            t if t.is_empty() => self.code.to_string(),
            t => format!("{} {t}", self.code),
        }
    }
}

/// `200 text` → (200, "text").
fn parse(line: &[u8]) -> Option<Response> {
    let (code, rest) = match line {
        [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => {
            let digit = |d: &u8| u16::from(d - b'0');
            (digit(a) * 100 + digit(b) * 10 + digit(c), rest)
        }
        _ => return None,
    };
    let text = match rest {
        [] => &[][..],
        [b' ', text @ ..] => text,
        _ => return None,
    };
    Some(Response {
        code,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

async fn response(s: &mut Session, awaited: &str) -> Result<Response, Stop> {
    let line = s.line(awaited).await?;
    match parse(&line) {
        Some(r) => Ok(r),
        None => down(format!("{awaited} is not NNTP: \"{}\"", shown_bytes(&line))),
    }
}

/// Sends `line` and reads the response; with `accepted` non-empty, its code must be
/// one of them. `what` names the command in reasons.
async fn command(
    s: &mut Session,
    line: &str,
    what: &str,
    accepted: &[u16],
) -> Result<Response, Stop> {
    s.send(line, what).await?;
    let r = response(s, &format!("reply to {what}")).await?;
    if accepted.is_empty() || accepted.contains(&r.code) {
        return Ok(r);
    }
    let expected: Vec<String> = accepted.iter().map(u16::to_string).collect();
    down(format!(
        "{what} answered {} (expected {})",
        r.code_and_text(),
        expected.join(" or ")
    ))
}

async fn quit(s: &mut Session) -> Result<(), Stop> {
    if s.write_line("QUIT").await.is_err() {
        return Ok(());
    }
    match s.read_line().await.map(|line| parse(&line)) {
        Ok(Some(r)) if r.code != 205 => down(format!(
            "QUIT answered {} (expected 205)",
            r.code_and_text()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::TlsMode;

    #[test]
    fn responses() {
        assert_eq!(
            parse(b"211 0 1 0 lab.test"),
            Some(Response {
                code: 211,
                text: "0 1 0 lab.test".into()
            })
        );
        assert_eq!(parse(b"205").map(|r| r.code), Some(205));
        for bad in [
            &b"HTTP/1.1 400 Bad"[..],
            b"20",
            b"2000 x",
            b"200-x",
            b"",
            b"700 x",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let r = parse(b"400 busy\tnow").expect("response");
        assert_eq!(r.code_and_text(), "400 busy\\tnow");
    }

    #[test]
    fn group_names() {
        assert!(is_group_name("lab.test"));
        assert!(is_group_name("comp.lang.rust"));
        assert!(!is_group_name("lab test"));
        assert!(!is_group_name("lab\r\nQUIT"));
        assert!(!is_group_name(""));
        let bad = Prepared::new(&Nntp {
            tls: TlsMode::None,
            group: Some("a b".into()),
        });
        assert!(matches!(bad, Err(Error::Option { .. })), "{bad:?}");
    }
}
