//! A check reading an endless body keeps its memory bounded. Its own test binary,
//! so no other test's allocations blur the process's peak RSS.

mod support;

use std::time::Duration;

use checkers::spec::Pattern;
use support::check::{assert_down, http_check, verdict};
use support::hostile::{self, read_head};
use tokio::io::AsyncWriteExt;

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[tokio::test]
async fn gigabyte_body_with_a_pattern_reads_a_bounded_prefix() {
    let addr = hostile::tcp(|mut s| async move {
        let _ = read_head(&mut s).await;
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
        if s.write_all(head).await.is_err() {
            return;
        }
        let zeros = vec![0u8; 64 << 10];
        while s.write_all(&zeros).await.is_ok() {}
    })
    .await;
    let before = status_kib("VmRSS:");
    let check = http_check(|h, c| {
        c.timeout = Duration::from_secs(10);
        h.expect_body = Some(Pattern::new("never there").expect("regex"));
    });
    let v = verdict(check, addr).await;
    assert_down(&v, "body did not match /never there/ (in the first 1 MiB");
    let peak = status_kib("VmHWM:");
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(grew_mib < 64, "RSS grew by {grew_mib} MiB during the check");
}
