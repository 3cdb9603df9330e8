//! The control socket: newline-delimited JSON between `directorctl` and `directord`.
//!
//! One request per line, one response per line. A malformed request gets an error
//! response and changes nothing; the connection stays usable.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The director's state.
    Status,
    /// Become active now; the peer yields.
    Takeover,
    /// Hand over now and stay standby until `takeover`.
    Standby,
    /// Re-read the config file: validate first, then apply the difference.
    Reload,
    /// Say what `reload` would change, without applying it.
    ReloadDryRun,
    /// Weight 0 for one real server of a service (quiesce: existing connections
    /// stay); answers its active and inactive connections. Survives reloads.
    Drain { service: String, real: String },
    /// Back to the configured weight after a drain.
    Enable { service: String, real: String },
    /// Restart in place (re-exec the binary, e.g. after an upgrade) keeping the
    /// role, the VIPs and the IPVS table: the peer sees no gap in the adverts.
    Restart,
    /// Run one real server's health check now and answer its result (it does not
    /// count for rise/fall).
    Check { service: String, real: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: Some(message.into()),
            error: None,
            status: None,
        }
    }

    pub fn status(status: serde_json::Value) -> Self {
        Self {
            ok: true,
            message: None,
            error: None,
            status: Some(status),
        }
    }

    /// A message with data (the real server after a drain).
    pub fn with_data(message: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            ok: true,
            message: Some(message.into()),
            error: None,
            status: Some(data),
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: None,
            error: Some(error.into()),
            status: None,
        }
    }
}

/// Parses one request line, with an operator-readable error.
pub fn parse_request(line: &str) -> Result<Request, String> {
    const COMMANDS: &str =
        "status, takeover, standby, reload, reload-dry-run, drain, enable, check, restart";
    let line = line.trim();
    if line.is_empty() {
        return Err("empty request".into());
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("request is not JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("request must be a JSON object like {\"command\":\"status\"}".into());
    };
    let Some(command) = object.get("command").and_then(|c| c.as_str()) else {
        return Err("request lacks a \"command\" string".into());
    };
    let fields: &[&str] = match command {
        "status" | "takeover" | "standby" | "reload" | "reload-dry-run" | "restart" => &[],
        "drain" | "enable" | "check" => &["service", "real"],
        _ => {
            return Err(format!(
                "unknown command \"{command}\" (commands: {COMMANDS})"
            ));
        }
    };
    if let Some(extra) = object
        .keys()
        .find(|k| *k != "command" && !fields.contains(&k.as_str()))
    {
        return Err(match fields {
            [] => format!("command \"{command}\" takes no field \"{extra}\""),
            _ => format!(
                "command \"{command}\" takes no field \"{extra}\" (fields: {})",
                fields.join(", ")
            ),
        });
    }
    if let Some(missing) = fields
        .iter()
        .find(|f| !object.get(**f).is_some_and(|v| v.is_string()))
    {
        return Err(format!(
            "command \"{command}\" needs a \"{missing}\" string (fields: {})",
            fields.join(", ")
        ));
    }
    serde_json::from_value(value.clone()).map_err(|e| format!("bad \"{command}\" request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status,
            Request::Takeover,
            Request::Standby,
            Request::Reload,
            Request::ReloadDryRun,
            Request::Restart,
            Request::Drain {
                service: "www".into(),
                real: "10.0.1.11:80".into(),
            },
            Request::Enable {
                service: "www".into(),
                real: "10.0.1.11".into(),
            },
        ] {
            let line = serde_json::to_string(&r).expect("serializes");
            assert_eq!(parse_request(&line), Ok(r));
        }
        assert_eq!(
            parse_request(r#"{"command":"status"}"#),
            Ok(Request::Status)
        );
    }

    #[test]
    fn bad_requests_are_explained() {
        assert!(parse_request("").unwrap_err().contains("empty"));
        assert!(parse_request("status").unwrap_err().contains("not JSON"));
        assert!(parse_request("{}").unwrap_err().contains("lacks"));
        let e = parse_request(r#"{"command":"explode"}"#).unwrap_err();
        assert!(e.contains("explode") && e.contains("takeover"), "{e}");
        let e = parse_request(r#"{"command":"status","x":1}"#).unwrap_err();
        assert!(e.contains("status"), "{e}");
    }

    #[test]
    fn drain_and_enable_name_a_service_and_a_real_server() {
        assert_eq!(
            parse_request(r#"{"command":"drain","service":"www","real":"10.0.1.11:80"}"#),
            Ok(Request::Drain {
                service: "www".into(),
                real: "10.0.1.11:80".into()
            })
        );
        let e = parse_request(r#"{"command":"drain","service":"www"}"#).unwrap_err();
        assert!(e.contains("\"real\""), "{e}");
        let e = parse_request(r#"{"command":"enable","service":"www","real":7}"#).unwrap_err();
        assert!(e.contains("\"real\" string"), "{e}");
        let e =
            parse_request(r#"{"command":"enable","service":"www","real":"a","x":1}"#).unwrap_err();
        assert!(e.contains("\"x\"") && e.contains("service, real"), "{e}");
    }
}
