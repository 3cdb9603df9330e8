//! Human durations: "100ms", "2s", "1m30s", "1h".

use std::time::Duration;

/// Parses a human duration. Units: `ms`, `s`, `m`, `h`; parts may be chained
/// ("1m30s"). A bare number is refused so that "100" never silently means seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration, expected e.g. \"100ms\" or \"2s\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("\"{text}\" lacks a unit (ms, s, m or h)"))?;
        if digits == 0 {
            return Err(format!(
                "\"{text}\" is not a duration, expected e.g. \"100ms\" or \"2s\""
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("\"{text}\" has a malformed number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor_ms = match &rest[..unit_len] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            other => {
                return Err(format!(
                    "\"{text}\" has an unknown unit \"{other}\" (use ms, s, m or h)"
                ));
            }
        };
        rest = &rest[unit_len..];
        let ms = number * factor_ms;
        if !ms.is_finite() || ms > 1e12 {
            return Err(format!("\"{text}\" is too long"));
        }
        total += Duration::from_micros((ms * 1000.0).round() as u64);
    }
    Ok(total)
}

/// Formats a duration the way the config writes it.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_chains() {
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "100", "s", "10 parsecs", "1x", "ms100", "1..2s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format(Duration::from_millis(100)), "100ms");
        assert_eq!(format(Duration::from_secs(3)), "3s");
    }
}
