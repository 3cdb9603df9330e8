//! Waiting on a running protocol through its `FailoverHandle`; shared by the VRRP
//! and the heartbeat tests.

#![allow(dead_code)]

use std::time::Duration;

use heartbeat::role::{Command, FailoverHandle, Role, Status, Transition};

/// Waits until the status satisfies `pred`; panics after `timeout`.
pub async fn wait_status(
    handle: &FailoverHandle,
    what: &str,
    timeout: Duration,
    pred: impl FnMut(&Status) -> bool,
) -> Status {
    let mut rx = handle.status.clone();
    let result = tokio::time::timeout(timeout, rx.wait_for(pred))
        .await
        .map(|r| r.map(|status| status.clone()));
    match result {
        Ok(Ok(status)) => status,
        _ => panic!(
            "timed out after {timeout:?} waiting for {what}; status: {:#?}",
            *handle.status.borrow()
        ),
    }
}

/// Waits until the node's role is `role`; panics after `timeout`.
pub async fn wait_role(handle: &FailoverHandle, role: Role, timeout: Duration) -> Status {
    wait_status(handle, &format!("role {role:?}"), timeout, |s| {
        s.role == role
    })
    .await
}

/// Every transition sent so far (the status is published just before a
/// transition is sent, so wait a moment for the last ones).
pub async fn drain(handle: &mut FailoverHandle) -> Vec<Transition> {
    let mut out = Vec::new();
    while let Ok(Some(t)) =
        tokio::time::timeout(Duration::from_millis(200), handle.transitions.recv()).await
    {
        out.push(t);
    }
    out
}

/// Sends Shutdown and waits for the thread to end.
pub fn shutdown(handle: &mut FailoverHandle) {
    let _ = handle.commands.send(Command::Shutdown);
    if let Some(thread) = handle.thread.take() {
        thread.join().expect("protocol thread panicked");
    }
}
