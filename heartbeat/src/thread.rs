//! The thread a failover protocol runs on, and its start-up handshake.
//!
//! Each protocol runs on a thread of its own with a current-thread tokio runtime, so
//! failover timing never waits on the daemon's runtime (DESIGN §3).

use std::error::Error as StdError;
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::sched::{CloneFlags, setns};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::role::{Command, FailoverHandle, Status, Transition};

/// The protocol's ends of the channels to the supervisor.
#[derive(Debug)]
pub(crate) struct Ends {
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub transitions: mpsc::UnboundedSender<Transition>,
    pub status: watch::Sender<Status>,
}

/// Starts a protocol on a thread named `name`. `prepare` runs first on that thread
/// (enter the network namespace, build the runtime, read state); when it fails, so
/// does this call. Then `run` gets what `prepare` made and the channel ends, and
/// returns when the protocol has shut down.
pub(crate) fn spawn<T, P, R>(
    name: String,
    initial: Status,
    prepare: P,
    run: R,
) -> Result<FailoverHandle, Error>
where
    P: FnOnce() -> Result<T, Error> + Send + 'static,
    R: FnOnce(T, Ends) + Send + 'static,
{
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (transition_tx, transition_rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(initial);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), Error>>(1);
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let prepared = match prepare() {
                Ok(prepared) => prepared,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            drop(ready_tx);
            let ends = Ends {
                commands: command_rx,
                transitions: transition_tx,
                status: status_tx,
            };
            run(prepared, ends);
        })
        .map_err(|source| Error::SpawnThread {
            name: name.clone(),
            source,
        })?;

    match ready_rx.recv() {
        Ok(Ok(())) => Ok(FailoverHandle {
            commands: command_tx,
            transitions: transition_rx,
            status: status_rx,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(Error::ThreadStartup { name })
        }
    }
}

/// On the protocol thread, before anything else: enters the network namespace at
/// `netns` (if any) and builds the thread's runtime.
pub(crate) fn runtime_in(netns: Option<&Path>) -> Result<Runtime, Error> {
    if let Some(path) = netns {
        let err = |source: io::Error| Error::EnterNetns {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| err(io::Error::from(e)))?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::BuildRuntime { source })
}

/// The wall-clock time of a monotonic instant in the past.
pub(crate) fn wall_clock(t: Instant) -> SystemTime {
    let ago = Instant::now().saturating_duration_since(t);
    SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH)
}

/// An error and its causes on one line, for Fault reasons and logs.
pub(crate) fn describe(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
