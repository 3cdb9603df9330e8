//! FTP check: greeting, optionally TLS (AUTH TLS, or FTPS from the first byte),
//! login, optionally RETR of a file over a passive data connection, QUIT.
//!
//! A small client on [`crate::session`], for the same reasons as SMTP's: one fresh
//! connection per attempt from the bind address, one deadline, the shared TLS
//! client, and a reason that names the step and quotes the reply ("login
//! rejected: 530 Login incorrect.", "RETR /x: 550 Failed to open file.").
//!
//! - Replies follow RFC 959 4.2: `ddd text`, or `ddd-text` then any lines until
//!   one that starts with `ddd `. A reply is bounded to [`MAX_REPLY`] bytes.
//! - Login: `USER` then `PASS` (a server may accept the user without a password
//!   with 230). Without a configured login: `anonymous` / `directord@`. The
//!   password never appears in a reason, even when a server echoes it.
//! - TLS (RFC 4217): `AUTH TLS` → 234 and the handshake, or implicit FTPS. Before a
//!   data connection, `PBSZ 0` and `PROT P`, so the file travels over TLS too. The
//!   data connection's handshake resumes the control connection's TLS session, as
//!   servers require by default (vsftpd's `require_ssl_reuse`): an attempt that
//!   retrieves over TLS uses a connector of its own with a fresh session cache, so
//!   the control connection still does a full, verified handshake each attempt.
//! - Passive mode only: `EPSV` (RFC 2428), falling back to `PASV` when the server
//!   refuses EPSV. The data connection goes to the control connection's peer,
//!   whatever address a PASV reply names: a server (or whoever tampers with the
//!   reply) cannot point the checker at another host (the FTP bounce). It is made
//!   from the control connection's local address, as servers check that both
//!   come from the same client.
//! - The file is read up to [`MAX_BODY`] bytes; a longer file is matched on its
//!   first [`MAX_BODY`] bytes and the transfer is not waited for.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::session::{self, LineError, Session, fits_a_line, shown};
use crate::spec::{Ftp, MAX_BODY, MAX_REPLY};
use crate::tcp::{self, io_reason};
use crate::tls::{self, Handshake, Handshakes};
use crate::{Error, Stop, Target, Verdict, down};

/// The anonymous login (RFC 1635), used when the check has none.
const ANONYMOUS: (&str, &str) = ("anonymous", "directord@");

#[derive(Debug)]
pub(crate) struct Prepared {
    tls: Option<tls::Client>,
}

impl Prepared {
    pub(crate) fn new(spec: &Ftp) -> Result<Prepared, Error> {
        let option = |message: String| Err(Error::Option { message });
        if let Some(login) = &spec.login {
            if login.user.is_empty() || !fits_a_line(&login.user) {
                return option(format!(
                    "FTP user {:?} cannot be sent (empty, or a line break or NUL in it)",
                    login.user
                ));
            }
            if !fits_a_line(login.password.expose()) {
                // Never the password itself.
                return option("the FTP password has a line break or NUL in it".to_owned());
            }
        }
        match &spec.retrieve {
            Some(path) if path.is_empty() || !fits_a_line(path) => {
                return option(format!(
                    "FTP retrieve path {path:?} cannot be sent (empty, or a line break or NUL in it)"
                ));
            }
            None if spec.expect.is_some() => {
                return option("FTP expect needs a file to retrieve".to_owned());
            }
            _ => {}
        }
        let tls = tls::client(spec.tls.tls())?;
        Ok(Prepared { tls })
    }
}

pub(crate) async fn probe(p: &Prepared, spec: &Ftp, t: &Target) -> Result<Verdict, Error> {
    // A server may quote what it got; the password must not reach the reason.
    let password = spec.login.as_ref().map_or("", |l| l.password.expose());
    session::verdict_redacted(ftp_session(p, spec, t).await, password)
}

async fn ftp_session(p: &Prepared, spec: &Ftp, t: &Target) -> Result<(), Stop> {
    // The session keeps its own deadline from the same budget; this one bounds the
    // data connection.
    let deadline = Instant::now() + t.timeout;
    // A retrieval over TLS: the data connection's handshake resumes the control
    // connection's session.
    let resuming = p
        .tls
        .as_ref()
        .filter(|_| spec.retrieve.is_some())
        .map(tls::Client::resuming);
    let client = resuming.as_ref().or(p.tls.as_ref());
    let Handshakes { implicit, starttls } = tls::handshakes(&spec.tls, client, t.addr.ip());
    let data_tls = implicit.clone().or_else(|| starttls.clone());

    let mut s = Session::connect(t, implicit).await?;
    expect(&mut s, Step::Greeting, &[220]).await?;
    if let Some(handshake) = starttls {
        command(&mut s, "AUTH TLS", Step::AuthTls, &[234]).await?;
        s = s.upgrade(handshake).await?;
    }
    login(&mut s, spec).await?;
    if let Some(path) = &spec.retrieve {
        if data_tls.is_some() {
            command(&mut s, "PBSZ 0", Step::Pbsz, &[200]).await?;
            command(&mut s, "PROT P", Step::Prot, &[200]).await?;
        }
        let file = retrieve(&mut s, path, data_tls, t, deadline).await?;
        if let Some(expect) = &spec.expect
            && !expect.is_match(&file.bytes)
        {
            let cut = &file.bytes[..file.bytes.len().min(4 * session::SHOWN)];
            return down(format!(
                "file did not match /{}/ (got {}{} bytes: \"{}\")",
                expect.as_str(),
                if file.complete { "" } else { "the first " },
                file.bytes.len(),
                shown(&String::from_utf8_lossy(cut))
            ));
        }
        if !file.complete {
            // The server is still sending; its reply to QUIT would come after the
            // transfer's.
            let _ = s.write_line("QUIT").await;
            return Ok(());
        }
    }
    quit(&mut s).await
}

async fn login(s: &mut Session, spec: &Ftp) -> Result<(), Stop> {
    let (user, password) = match &spec.login {
        Some(login) => (login.user.as_str(), login.password.expose()),
        None => ANONYMOUS,
    };
    let reply = command(
        s,
        &format!("USER {user}"),
        Step::User,
        &[230, 331, 332, 530],
    )
    .await?;
    let reply = match reply.code {
        230 => return Ok(()),
        331 => command(s, &format!("PASS {password}"), Step::Pass, &[]).await?,
        _ => reply,
    };
    match reply.code {
        230 | 202 => Ok(()),
        332 => down(format!(
            "login needs an account (ACCT): {}",
            reply.code_and_text()
        )),
        _ => down(format!("login rejected: {}", reply.code_and_text())),
    }
}

/// A retrieved file: its first [`MAX_BODY`] bytes, and whether that was all.
struct File {
    bytes: Vec<u8>,
    complete: bool,
}

/// `TYPE I`, a passive data connection, `RETR path`, the file, the transfer's end.
async fn retrieve(
    s: &mut Session,
    path: &str,
    tls: Option<Handshake<'_>>,
    t: &Target,
    deadline: Instant,
) -> Result<File, Stop> {
    command(s, "TYPE I", Step::Type, &[200]).await?;
    let port = passive_port(s).await?;
    let data = connect_data(s, t, port, deadline).await?;
    let what = format!("RETR {}", shown(path));
    s.send(&format!("RETR {path}"), &what).await?;
    // With TLS the server may open the data session before or after its 150: the
    // handshake runs beside the wait for the reply. Aborted if the reply is a
    // refusal (the server will never answer the handshake).
    let data = match tls {
        None => Data::Plain(data),
        Some(h) => {
            let (connector, name) = (h.connector.clone(), h.name);
            Data::Handshake(Abort(tokio::spawn(timeout_at(deadline, async move {
                connector.connect(name, data).await
            }))))
        }
    };
    let reply = read_reply(s, &format!("reply to {what}")).await?;
    if !matches!(reply.code, 125 | 150) {
        return down(format!("{what}: {}", reply.code_and_text()));
    }
    let (bytes, complete) = match data {
        Data::Plain(tcp) => read_file(tcp, &what, deadline, s.timeout_ms()).await?,
        Data::Handshake(mut task) => match (&mut task.0).await {
            Ok(Ok(Ok(tls))) => read_file(tls, &what, deadline, s.timeout_ms()).await?,
            Ok(Ok(Err(e))) => {
                return down(format!(
                    "{what}: data connection: {}",
                    tls::describe_tls_error(&e)
                ));
            }
            Ok(Err(_)) => {
                return down(format!(
                    "{what}: data connection: TLS: no handshake within {} ms",
                    s.timeout_ms()
                ));
            }
            Err(e) => return down(format!("{what}: data connection: TLS: {e}")),
        },
    };
    if complete {
        let end = read_reply(s, &format!("end of {what}")).await?;
        if !matches!(end.code, 226 | 250) {
            return down(format!(
                "{what}: transfer ended {} (expected 226)",
                end.code_and_text()
            ));
        }
    }
    Ok(File { bytes, complete })
}

/// The data connection once RETR is sent: plain, or its TLS handshake under way.
enum Data {
    Plain(TcpStream),
    Handshake(Abort<HandshakeResult>),
}

type HandshakeResult = Result<
    std::io::Result<tokio_rustls::client::TlsStream<TcpStream>>,
    tokio::time::error::Elapsed,
>;

/// A spawned task aborted when dropped.
struct Abort<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Abort<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The data port: `EPSV` (229, `(|||port|)`), or `PASV` (227, `h1,h2,h3,h4,p1,p2`)
/// when the server refuses EPSV. The address in a PASV reply is not used.
async fn passive_port(s: &mut Session) -> Result<u16, Stop> {
    let reply = command(s, "EPSV", Step::Epsv, &[229, 500, 501, 502, 504, 522]).await?;
    if reply.code == 229 {
        return match epsv_port(&reply.all_text()) {
            Some(port) => Ok(port),
            None => down(format!(
                "EPSV reply has no port: \"{}\"",
                shown(&reply.all_text())
            )),
        };
    }
    let reply = command(s, "PASV", Step::Pasv, &[227]).await?;
    match pasv_port(&reply.all_text()) {
        Some(port) => Ok(port),
        None => down(format!(
            "PASV reply has no address: \"{}\"",
            shown(&reply.all_text())
        )),
    }
}

/// "Entering Extended Passive Mode (|||40039|)" → 40039 (any delimiter, RFC 2428).
fn epsv_port(text: &str) -> Option<u16> {
    let inner = text.split_once('(')?.1.split_once(')')?.0;
    let d = inner.chars().next()?;
    if !d.is_ascii_graphic() || d.is_ascii_digit() {
        return None;
    }
    let fields: Vec<&str> = inner.split(d).collect();
    match fields.as_slice() {
        ["", "", "", port, ""] => port.parse().ok().filter(|&p| p != 0),
        _ => None,
    }
}

/// "Entering Passive Mode (192,0,2,1,156,71)" → 40007. The six numbers may come
/// without the parentheses (RFC 1123 4.1.2.6).
fn pasv_port(text: &str) -> Option<u16> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let numbers: Vec<u8> = text[start..]
        .split(',')
        .take(6)
        .map(|n| {
            let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect::<Option<_>>()?;
    match numbers.as_slice() {
        [_, _, _, _, p1, p2] => Some(u16::from(*p1) << 8 | u16::from(*p2)).filter(|&p| p != 0),
        _ => None,
    }
}

/// The data connection: to the control connection's peer at `port`, from the
/// control connection's local address.
async fn connect_data(
    s: &Session,
    t: &Target,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, Stop> {
    let addr = SocketAddr::new(t.addr.ip(), port);
    tcp::connect_from(addr, Some(s.local_addr().ip()), deadline)
        .await
        .map_err(|e| e.stop(format_args!("data connection to {addr}"), t.timeout))
}

/// The file until the server closes the data connection, or its first
/// [`MAX_BODY`] bytes (then `false`).
async fn read_file<S: AsyncRead + AsyncWrite + Unpin>(
    mut data: S,
    what: &str,
    deadline: Instant,
    timeout_ms: u128,
) -> Result<(Vec<u8>, bool), Stop> {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let read = async {
        loop {
            let room = (MAX_BODY - bytes.len()).min(buf.len());
            if room == 0 {
                return Ok(false);
            }
            match data.read(&mut buf[..room]).await {
                Ok(0) => return Ok(true),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                // A TLS peer that closes without close_notify: the reply on the
                // control connection says whether the transfer was whole.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    };
    match timeout_at(deadline, read).await {
        Ok(Ok(complete)) => {
            if complete {
                // Our close_notify, as some servers wait for it; not waited for long.
                let _ = timeout_at(deadline, data.shutdown()).await;
            }
            Ok((bytes, complete))
        }
        Ok(Err(e)) => down(format!("{what}: data connection: {}", io_reason(&e))),
        Err(_) => down(format!(
            "{what}: the file did not end within {timeout_ms} ms (got {} bytes)",
            bytes.len()
        )),
    }
}

/// QUIT at the end of a good session: only an explicit other reply than 221 is
/// down; a server that closes at once, or does not answer in time, has served.
async fn quit(s: &mut Session) -> Result<(), Stop> {
    if s.write_line("QUIT").await.is_err() {
        return Ok(());
    }
    match read_reply_raw(s).await {
        Ok(reply) if reply.code != 221 => down(format!(
            "QUIT answered {} (expected 221)",
            reply.code_and_text()
        )),
        _ => Ok(()),
    }
}

/// The steps of a session, for the reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    AuthTls,
    User,
    Pass,
    Pbsz,
    Prot,
    Type,
    Epsv,
    Pasv,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Greeting => "greeting",
            Step::AuthTls => "AUTH TLS",
            Step::User => "USER",
            Step::Pass => "PASS",
            Step::Pbsz => "PBSZ 0",
            Step::Prot => "PROT P",
            Step::Type => "TYPE I",
            Step::Epsv => "EPSV",
            Step::Pasv => "PASV",
        }
    }

    fn awaited(self) -> String {
        match self {
            Step::Greeting => "greeting".to_owned(),
            other => format!("reply to {}", other.name()),
        }
    }
}

/// Sends `line` (quoted in reasons only as the step's name) and reads the reply;
/// with `accepted` non-empty, its code must be one of them.
async fn command(s: &mut Session, line: &str, step: Step, accepted: &[u16]) -> Result<Reply, Stop> {
    s.send(line, step.name()).await?;
    expect(s, step, accepted).await
}

async fn expect(s: &mut Session, step: Step, accepted: &[u16]) -> Result<Reply, Stop> {
    let reply = read_reply(s, &step.awaited()).await?;
    if accepted.is_empty() || accepted.contains(&reply.code) {
        return Ok(reply);
    }
    let what = match step {
        Step::Greeting => "greeting".to_owned(),
        other => format!("{} answered", other.name()),
    };
    let expected: Vec<String> = accepted
        .iter()
        .filter(|c| (100..400).contains(*c))
        .map(u16::to_string)
        .collect();
    down(format!(
        "{what} {} (expected {})",
        reply.code_and_text(),
        expected.join(" or ")
    ))
}

/// One FTP reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// "550 Failed to open file.", or "550" alone; the first line, cut.
    fn code_and_text(&self) -> String {
        let first = self.lines.first().map_or("", |l| l.trim());
        match shown(first) {
            t if t.is_empty() => self.code.to_string(),
            t => format!("{} {t}", self.code),
        }
    }

    fn all_text(&self) -> String {
        self.lines.join(" ")
    }
}

/// How reading a reply can fail, besides the line errors.
enum ReplyError {
    Line(LineError),
    NotFtp(Vec<u8>),
    TooLong,
}

async fn read_reply(s: &mut Session, awaited: &str) -> Result<Reply, Stop> {
    match read_reply_raw(s).await {
        Ok(reply) => Ok(reply),
        Err(ReplyError::Line(e)) => down(s.read_reason(e, awaited)),
        Err(ReplyError::NotFtp(line)) => down(format!(
            "{awaited} is not FTP: \"{}\"",
            session::shown_bytes(&line)
        )),
        Err(ReplyError::TooLong) => down(format!("{awaited} too long (over {MAX_REPLY} bytes)")),
    }
}

async fn read_reply_raw(s: &mut Session) -> Result<Reply, ReplyError> {
    let first = s.read_line().await.map_err(ReplyError::Line)?;
    let Some((code, more, text)) = parse_first(&first) else {
        return Err(ReplyError::NotFtp(first));
    };
    let mut lines = vec![text];
    let mut total = first.len();
    if !more {
        return Ok(Reply { code, lines });
    }
    loop {
        let line = s.read_line().await.map_err(ReplyError::Line)?;
        total += line.len() + 2;
        if total > MAX_REPLY {
            return Err(ReplyError::TooLong);
        }
        match ends_reply(&line, code) {
            Some(text) => {
                lines.push(text);
                return Ok(Reply { code, lines });
            }
            None => lines.push(String::from_utf8_lossy(&line).into_owned()),
        }
    }
}

/// A reply's first line → code, whether more lines follow, text.
fn parse_first(line: &[u8]) -> Option<(u16, bool, String)> {
    let (code, rest) = match line {
        [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => {
            let digit = |d: &u8| u16::from(d - b'0');
            (digit(a) * 100 + digit(b) * 10 + digit(c), rest)
        }
        _ => return None,
    };
    let (more, text) = match rest {
        [] => (false, &[][..]),
        [b' ', text @ ..] => (false, text),
        [b'-', text @ ..] => (true, text),
        _ => return None,
    };
    Some((code, more, String::from_utf8_lossy(text).into_owned()))
}

/// Whether `line` ends a multi-line reply with `code` (`ddd text` or `ddd`); its
/// text if so.
fn ends_reply(line: &[u8], code: u16) -> Option<String> {
    let digits = code.to_string();
    let rest = line.strip_prefix(digits.as_bytes())?;
    match rest {
        [] => Some(String::new()),
        [b' ', text @ ..] => Some(String::from_utf8_lossy(text).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Login, Pattern, Secret, TlsMode};

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_first(b"220 (vsFTPd 3.0.3)"),
            Some((220, false, "(vsFTPd 3.0.3)".to_owned()))
        );
        assert_eq!(
            parse_first(b"230-Welcome"),
            Some((230, true, "Welcome".to_owned()))
        );
        assert_eq!(parse_first(b"221"), Some((221, false, String::new())));
        for bad in [&b"SSH-2.0-OpenSSH_9.2"[..], b"22", b"2200 x", b"620 x", b""] {
            assert_eq!(parse_first(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            ends_reply(b"230 Login successful.", 230).as_deref(),
            Some("Login successful.")
        );
        assert_eq!(ends_reply(b"230", 230).as_deref(), Some(""));
        assert_eq!(ends_reply(b"230-more", 230), None);
        assert_eq!(ends_reply(b" 230 indented", 230), None);
        assert_eq!(ends_reply(b"530 other code", 230), None);
    }

    #[test]
    fn passive_replies() {
        assert_eq!(
            epsv_port("Entering Extended Passive Mode (|||40039|)"),
            Some(40039)
        );
        assert_eq!(epsv_port("ok (!!!21!)"), Some(21));
        assert_eq!(epsv_port("Entering Extended Passive Mode (|||0|)"), None);
        assert_eq!(
            epsv_port("Entering Extended Passive Mode (|1|127.0.0.1|40039|)"),
            None
        );
        assert_eq!(epsv_port("no port"), None);
        assert_eq!(epsv_port("(|||70000|)"), None);
        assert_eq!(
            pasv_port("Entering Passive Mode (127,0,0,1,156,71)."),
            Some(40007)
        );
        assert_eq!(pasv_port("=10,255,255,1,4,1"), Some(1025));
        assert_eq!(pasv_port("Entering Passive Mode (127,0,0,1,156)"), None);
        assert_eq!(pasv_port("Entering Passive Mode (127,0,0,1,300,1)"), None);
        assert_eq!(pasv_port("Entering Passive Mode"), None);
    }

    fn spec(edit: impl FnOnce(&mut Ftp)) -> Ftp {
        let mut ftp = Ftp {
            tls: TlsMode::None,
            login: None,
            retrieve: None,
            expect: None,
        };
        edit(&mut ftp);
        ftp
    }

    #[test]
    fn options_that_cannot_go_on_the_wire() {
        let bad = |ftp: Ftp| match Prepared::new(&ftp) {
            Err(Error::Option { message }) => message,
            other => panic!("{other:?}"),
        };
        let message = bad(spec(|f| {
            f.login = Some(Login {
                user: "web".into(),
                password: Secret::inline("s3cret\r\nDELE x"),
            })
        }));
        assert!(!message.contains("s3cret"), "{message}");
        bad(spec(|f| {
            f.login = Some(Login {
                user: "web\nQUIT".into(),
                password: Secret::inline("x"),
            })
        }));
        bad(spec(|f| f.retrieve = Some("/a\r\nDELE /b".into())));
        bad(spec(|f| {
            f.expect = Some(Pattern::new("ok").expect("pattern"))
        }));
        assert!(Prepared::new(&spec(|f| f.retrieve = Some("/a file.txt".into()))).is_ok());
    }
}
