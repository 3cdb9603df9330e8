//! The thread a failover protocol runs on, and its start-up handshake.
//!
//! Each protocol runs on a thread of its own with a current-thread tokio runtime, so
//! failover timing never waits on the daemon's runtime (DESIGN §3).

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
