//! Heartbeat's key file (`/etc/ha.d/authkeys`, authkeys(5)) and the message
//! digests it names.
//!
//! ```text
//! # comment
//! auth 2          <- the key id that signs outgoing messages
//! 1 sha1 oldsecret
//! 2 sha1 newsecret
//! ```
//!
//! Incoming messages are accepted with any configured key id, so a key is rolled by
//! adding it on both nodes, then switching `auth` on both, then removing the old
//! one. Key ids are 1..=15, secrets one whitespace-free token.
//!
//! Digests, as heartbeat 3's HBauth plugins compute them over the message text
//! (lowercase hex, no padding):
//! - `sha1`, `md5`: HMAC (RFC 2104) keyed with the secret's bytes.
//! - `sha256`: HMAC-SHA256, directord's default; heartbeat does not know it.
//! - `crc`: CRC-32 (polynomial 0x04C11DB7, MSB first, initial 0, final
//!   complement), printed with `%lx`. No secret: anyone can forge it, so the
//!   configuration refuses it unless explicitly allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};

use crate::error::Error;

/// Highest key id heartbeat accepts.
pub const MAX_KEY_ID: u8 = 15;

/// A signature method of the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Sha1,
    Md5,
    /// HMAC-SHA256: directord only.
    Sha256,
    /// Insecure checksum, no secret.
    Crc,
}

impl Method {
    /// The name used in the key file.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Sha1 => "sha1",
            Method::Md5 => "md5",
            Method::Sha256 => "sha256",
            Method::Crc => "crc",
        }
    }

    fn from_name(name: &str) -> Option<Method> {
        match name {
            "sha1" => Some(Method::Sha1),
            "md5" => Some(Method::Md5),
            "sha256" => Some(Method::Sha256),
            "crc" => Some(Method::Crc),
            _ => None,
        }
    }

    /// Whether the method takes a secret.
    pub const fn needs_secret(self) -> bool {
        !matches!(self, Method::Crc)
    }

    /// The digest of `text` as heartbeat writes it after the key id.
    pub fn digest(self, secret: &[u8], text: &[u8]) -> String {
        match self {
            Method::Sha1 => hmac_hex::<Hmac<sha1::Sha1>>(secret, text),
            Method::Md5 => hmac_hex::<Hmac<md5::Md5>>(secret, text),
            Method::Sha256 => hmac_hex::<Hmac<sha2::Sha256>>(secret, text),
            Method::Crc => format!("{:x}", crc32(text)),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn hmac_hex<M: Mac + KeyInit>(secret: &[u8], text: &[u8]) -> String {
    let mut mac = <M as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(text);
    hex(&mac.finalize().into_bytes())
}

/// HMAC takes keys of any length; `new_from_slice` never fails for it.
#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC accepts keys of any length")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// heartbeat's `crc` method: CRC-32 with polynomial 0x04C11DB7, MSB first, initial
/// value 0, complemented at the end.
fn crc32(text: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &byte in text {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    !crc
}

/// One line of the key file.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub id: u8,
    pub method: Method,
    secret: Vec<u8>,
}

impl Key {
    /// A key; `secret` is ignored for `crc`.
    pub fn new(id: u8, method: Method, secret: impl Into<Vec<u8>>) -> Key {
        let secret = if method.needs_secret() {
            secret.into()
        } else {
            Vec::new()
        };
        Key { id, method, secret }
    }

    /// The digest of `text` with this key.
    pub fn digest(&self, text: &[u8]) -> String {
        self.method.digest(&self.secret, text)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a message's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `auth` field (or netstring trailer), or not `<id> <digest>`.
    Missing,
    /// Signed with a key id this node does not have.
    UnknownKey(u8),
    /// The digest does not match.
    Mismatch { key: u8 },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("no signature"),
            AuthError::UnknownKey(id) => write!(f, "signed with unknown key id {id}"),
            AuthError::Mismatch { key } => write!(f, "bad signature (key id {key})"),
        }
    }
}

/// The keys of a key file: every configured key verifies, the `auth` one signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKeys {
    send: u8,
    keys: BTreeMap<u8, Key>,
}

impl AuthKeys {
    /// One key that both signs and verifies.
    pub fn single(id: u8, method: Method, secret: impl Into<Vec<u8>>) -> AuthKeys {
        let key = Key::new(id, method, secret);
        AuthKeys {
            send: id,
            keys: BTreeMap::from([(id, key)]),
        }
    }

    /// Several keys; `send` signs. `None` when `send` is not among them.
    pub fn new(send: u8, keys: impl IntoIterator<Item = Key>) -> Option<AuthKeys> {
        let keys: BTreeMap<u8, Key> = keys.into_iter().map(|k| (k.id, k)).collect();
        keys.contains_key(&send).then_some(AuthKeys { send, keys })
    }

    /// Reads a key file, refusing it when group or others may read or write it
    /// (heartbeat refuses group/other read; writing would let them change the key).
    pub fn load(path: &Path) -> Result<AuthKeys, Error> {
        let read_err = |source| Error::ReadAuthKeys {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        let mode = file.metadata().map_err(read_err)?.mode() & 0o7777;
        if mode & 0o066 != 0 {
            return Err(Error::AuthKeysPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_err)?;
        AuthKeys::parse(&text).map_err(|(line, reason)| Error::ParseAuthKeys {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the key file format; errors give the 1-based line and why.
    pub fn parse(text: &str) -> Result<AuthKeys, (usize, String)> {
        let mut send: Option<(usize, u8)> = None;
        let mut keys = BTreeMap::new();
        let mut last_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            last_line = line;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            if words[0] == "auth" {
                let [_, id] = words[..] else {
                    return Err((line, "expected `auth <key id>`".into()));
                };
                if send.is_some() {
                    return Err((line, "a second `auth` line".into()));
                }
                send = Some((line, parse_id(id).map_err(|r| (line, r))?));
                continue;
            }
            let (id, method, secret) = match words[..] {
                [id, method] => (id, method, None),
                [id, method, secret] => (id, method, Some(secret)),
                _ => {
                    return Err((
                        line,
                        "expected `<key id> <method> [<secret>]` or `auth <key id>`".into(),
                    ));
                }
            };
            let id = parse_id(id).map_err(|r| (line, r))?;
            let Some(method) = Method::from_name(method) else {
                return Err((
                    line,
                    format!("unknown method `{method}` (sha1, md5, sha256 or crc)"),
                ));
            };
            match (method.needs_secret(), secret) {
                (true, None) => {
                    return Err((line, format!("method {method} needs a secret")));
                }
                (false, Some(_)) => {
                    return Err((line, format!("method {method} takes no secret")));
                }
                _ => {}
            }
            if keys.contains_key(&id) {
                return Err((line, format!("key id {id} defined twice")));
            }
            keys.insert(id, Key::new(id, method, secret.unwrap_or("").as_bytes()));
        }
        let Some((line, send)) = send else {
            return Err((last_line.max(1), "missing `auth <key id>` line".into()));
        };
        if !keys.contains_key(&send) {
            return Err((
                line,
                format!("`auth {send}` names a key id that is not defined"),
            ));
        }
        Ok(AuthKeys { send, keys })
    }

    /// The key that signs outgoing messages.
    pub fn sending(&self) -> &Key {
        // `send` is always a key of the map (checked by every constructor).
        &self.keys[&self.send]
    }

    /// Every configured key, by id.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys.values()
    }

    pub fn get(&self, id: u8) -> Option<&Key> {
        self.keys.get(&id)
    }

    /// Signs `text` with the sending key: the `auth` value, `<id> <digest>`.
    pub fn sign(&self, text: &[u8]) -> String {
        let key = self.sending();
        format!("{} {}", key.id, key.digest(text))
    }

    /// Checks an `auth` value (`<id> <digest>`) against `text`; returns the key id.
    pub fn verify(&self, auth: &[u8], text: &[u8]) -> Result<u8, AuthError> {
        let auth = std::str::from_utf8(auth).map_err(|_| AuthError::Missing)?;
        let mut words = auth.split_whitespace();
        let (Some(id), Some(digest), None) = (words.next(), words.next(), words.next()) else {
            return Err(AuthError::Missing);
        };
        let id: u8 = id.parse().map_err(|_| AuthError::Missing)?;
        let key = self.get(id).ok_or(AuthError::UnknownKey(id))?;
        if constant_time_eq(key.digest(text).as_bytes(), digest.as_bytes()) {
            Ok(id)
        } else {
            Err(AuthError::Mismatch { key: id })
        }
    }
}

fn parse_id(word: &str) -> Result<u8, String> {
    match word.parse::<u8>() {
        Ok(id) if (1..=MAX_KEY_ID).contains(&id) => Ok(id),
        _ => Err(format!(
            "key id `{word}` is not a number from 1 to {MAX_KEY_ID}"
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_heartbeat_key_file() {
        let keys = AuthKeys::parse(
            "# rolling from 1 to 2\n\nauth 2\n1 sha1 oldsecret\n 2  md5\tnewsecret \n3 crc\n15 sha256 x\n",
        )
        .expect("parse");
        assert_eq!(keys.sending().id, 2);
        assert_eq!(keys.sending().method, Method::Md5);
        let ids: Vec<_> = keys.keys().map(|k| (k.id, k.method)).collect();
        assert_eq!(
            ids,
            [
                (1, Method::Sha1),
                (2, Method::Md5),
                (3, Method::Crc),
                (15, Method::Sha256)
            ]
        );
        // Secrets never show in Debug output.
        assert!(!format!("{keys:?}").contains("secret\""));
        assert!(!format!("{keys:?}").contains("oldsecret"));
    }

    #[test]
    fn key_file_errors_name_the_line() {
        let err = |text: &str| AuthKeys::parse(text).expect_err("should fail");
        assert_eq!(err("1 sha1 x\n").0, 1);
        assert!(err("1 sha1 x\n").1.contains("missing `auth"));
        assert_eq!(
            err("auth 2\n1 sha1 x\n"),
            (1, "`auth 2` names a key id that is not defined".into())
        );
        assert_eq!(err("auth 1\n1 sha1\n").0, 2);
        assert!(err("auth 1\n1 sha1\n").1.contains("needs a secret"));
        assert!(err("auth 1\n1 crc x\n").1.contains("takes no secret"));
        assert!(
            err("auth 1\n1 sha3 x\n")
                .1
                .contains("unknown method `sha3`")
        );
        assert!(err("auth 1\n16 sha1 x\n").1.contains("from 1 to 15"));
        assert!(err("auth 1\n0 sha1 x\n").1.contains("from 1 to 15"));
        assert_eq!(err("auth 1\n1 sha1 x\n1 md5 y\n").0, 3);
        assert!(
            err("auth 1\nauth 1\n1 sha1 x\n")
                .1
                .contains("second `auth`")
        );
        assert!(err("auth\n").1.contains("expected `auth <key id>`"));
        assert!(err("auth 1\n1 sha1 x y\n").1.contains("expected"));
    }

    #[test]
    fn refuses_key_file_readable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authkeys");
        std::fs::write(&path, "auth 1\n1 sha1 secret\n").expect("write");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            match AuthKeys::load(&path) {
                Err(e @ Error::AuthKeysPermissions { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(&path.display().to_string()), "{text}");
                    assert!(text.contains(&format!("{mode:04o}")), "{text}");
                }
                other => panic!("mode {mode:o}: expected a permission error, got {other:?}"),
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(AuthKeys::load(&path).expect("load").sending().id, 1);
        std::fs::write(&path, "auth 1\n1 sha1\n").expect("write");
        match AuthKeys::load(&path) {
            Err(e @ Error::ParseAuthKeys { line: 2, .. }) => {
                assert!(e.to_string().starts_with(&format!("{}:2:", path.display())));
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(matches!(
            AuthKeys::load(&dir.path().join("missing")),
            Err(Error::ReadAuthKeys { .. })
        ));
    }

    #[test]
    fn digests_match_reference_values() {
        // RFC 2202 test case 2.
        let text = b"what do ya want for nothing?";
        assert_eq!(
            Method::Sha1.digest(b"Jefe", text),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            Method::Md5.digest(b"Jefe", text),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            Method::Sha256.digest(b"Jefe", text),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // CRC-32/POSIX check value (without cksum's length suffix).
        assert_eq!(crc32(b"123456789"), 0x765e_7680);
        // Keys longer than a block are hashed first (RFC 2104), as heartbeat does.
        let long = [0xaa_u8; 80];
        assert_eq!(
            Method::Sha1.digest(
                &long,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn verify_accepts_any_configured_key() {
        let keys = AuthKeys::new(
            2,
            [
                Key::new(1, Method::Sha1, "old"),
                Key::new(2, Method::Sha1, "new"),
            ],
        )
        .expect("keys");
        let text = b"t=status\n";
        let signed = keys.sign(text);
        assert!(signed.starts_with("2 "));
        assert_eq!(keys.verify(signed.as_bytes(), text), Ok(2));
        let old = format!("1 {}", Method::Sha1.digest(b"old", text));
        assert_eq!(keys.verify(old.as_bytes(), text), Ok(1));
        let wrong = format!("1 {}", Method::Sha1.digest(b"other", text));
        assert_eq!(
            keys.verify(wrong.as_bytes(), text),
            Err(AuthError::Mismatch { key: 1 })
        );
        assert_eq!(keys.verify(b"3 00", text), Err(AuthError::UnknownKey(3)));
        assert_eq!(keys.verify(b"", text), Err(AuthError::Missing));
        assert_eq!(keys.verify(b"x y", text), Err(AuthError::Missing));
        assert_eq!(keys.verify(b"1 a b", text), Err(AuthError::Missing));
        assert!(AuthKeys::new(3, [Key::new(1, Method::Sha1, "x")]).is_none());
    }
}
