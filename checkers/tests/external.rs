//! The external check with real programs.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use checkers::spec::{Check, External, Protocol};
use checkers::{Error, Probe, Verdict};

const TIMEOUT: Duration = Duration::from_millis(300);

fn real() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 8080))
}

fn check(argv: &[&str], timeout: Duration) -> Check {
    let argv = argv.iter().map(|s| s.to_string()).collect();
    support::check::check(Protocol::External(External { argv }), timeout)
}

async fn run(argv: &[&str]) -> Result<Verdict, Error> {
    Probe::new(check(argv, TIMEOUT))
        .expect("prepare")
        .run(real())
        .await
}

/// Whether process `pid` has gone (a zombie waiting for its reaper counts as gone).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Waits up to 2 s for every pid listed in `file` to be gone.
fn assert_all_gone(file: &Path) {
    let pids = std::fs::read_to_string(file).expect("pid file");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert!(!pids.is_empty());
    let start = Instant::now();
    while !pids.iter().all(|p| gone(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still running: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn exit_zero_is_up() {
    assert_eq!(run(&["/bin/true"]).await.expect("run"), Verdict::Up);
    // Found on PATH too.
    assert_eq!(run(&["true"]).await.expect("run"), Verdict::Up);
}

#[tokio::test]
async fn a_nonzero_exit_is_down_with_the_status() {
    assert_eq!(
        run(&["/bin/false"]).await.expect("run"),
        Verdict::Down("exit status 1".into())
    );
}

#[tokio::test]
async fn the_reason_quotes_the_first_line_of_stderr() {
    assert_eq!(
        run(&[
            "/bin/sh",
            "-c",
            "echo ok; echo 'no backend' >&2; echo more >&2; exit 3"
        ])
        .await
        .expect("run"),
        Verdict::Down("exit status 3: no backend".into())
    );
}

#[tokio::test]
async fn a_flood_of_output_does_not_block_the_program() {
    assert_eq!(
        run(&["/bin/sh", "-c", "yes | head -n 300000; exit 2"])
            .await
            .expect("run"),
        Verdict::Down("exit status 2: y".into())
    );
}

#[tokio::test]
async fn the_program_gets_the_real_server_as_args_and_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = format!(
        r#"printf '%s\n' "$@" "$DIRECTORD_REAL_IP" "$DIRECTORD_REAL_PORT" "$DIRECTORD_CONNECT_IP" "$DIRECTORD_CONNECT_PORT" > {}; read line || echo stdin-empty >> {}"#,
        out.display(),
        out.display()
    );
    let mut c = check(&["/bin/sh", "-c", &script, "sh", "first arg"], TIMEOUT);
    c.connect.ip = Some([127, 0, 0, 9].into());
    c.connect.port = Some(9090);
    let verdict = Probe::new(c).expect("prepare").run(real()).await;
    assert_eq!(verdict.expect("run"), Verdict::Up);
    assert_eq!(
        std::fs::read_to_string(&out).expect("output"),
        "first arg\n192.0.2.10\n8080\n192.0.2.10\n8080\n127.0.0.9\n9090\nstdin-empty\n"
    );
}

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let script = format!("sleep 30 & echo $$ $! > {}; sleep 30", pids.display());
    let start = Instant::now();
    assert_eq!(
        run(&["/bin/sh", "-c", &script]).await.expect("run"),
        Verdict::Down("timed out after 300 ms, killed".into())
    );
    assert!(start.elapsed() >= TIMEOUT);
    assert!(start.elapsed() < TIMEOUT + Duration::from_secs(1));
    assert_all_gone(&pids);
}

#[tokio::test]
async fn what_a_successful_program_leaves_behind_is_killed_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    // The background sleep holds stdout open: the check must not wait for it.
    let script = format!("sleep 30 & echo $! > {}; exit 0", pids.display());
    let start = Instant::now();
    assert_eq!(
        run(&["/bin/sh", "-c", &script]).await.expect("run"),
        Verdict::Up
    );
    assert!(start.elapsed() < TIMEOUT, "took {:?}", start.elapsed());
    assert_all_gone(&pids);
}

#[tokio::test]
async fn a_dropped_attempt_kills_the_program() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let script = format!("sleep 30 & echo $$ $! > {}; sleep 30", pids.display());
    let probe =
        Probe::new(check(&["/bin/sh", "-c", &script], Duration::from_secs(10))).expect("prepare");
    let cut = tokio::time::timeout(Duration::from_millis(300), probe.run(real())).await;
    assert!(cut.is_err(), "still running when dropped");
    assert_all_gone(&pids);
}

#[tokio::test]
async fn a_missing_program_is_a_checker_error() {
    match run(&["/nonexistent/check-it"]).await {
        Err(Error::Spawn { program, source }) => {
            assert_eq!(program, "/nonexistent/check-it");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
}
