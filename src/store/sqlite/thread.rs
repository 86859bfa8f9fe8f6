//! A dedicated OS thread per SQLite connection, so that SQLite calls never
//! block tokio worker threads. Jobs arrive over a channel; results return
//! through a oneshot that the async caller awaits.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::records::StoreError;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Handle to a thread owning a connection state `S`. The thread ends when the
/// last handle is dropped.
pub(crate) struct ConnThread<S> {
    jobs: mpsc::Sender<Job<S>>,
    path: PathBuf,
}

impl<S> Clone for ConnThread<S> {
    fn clone(&self) -> Self {
        ConnThread {
            jobs: self.jobs.clone(),
            path: self.path.clone(),
        }
    }
}

impl<S: 'static> ConnThread<S> {
    /// Starts the thread and builds its state there with `init` (opening the
    /// connection is SQLite work too).
    pub(crate) async fn spawn(
        name: &str,
        path: PathBuf,
        init: impl FnOnce() -> Result<S, StoreError> + Send + 'static,
    ) -> Result<ConnThread<S>, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job<S>>();
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut state = match init() {
                    Ok(state) => {
                        let _ = ready_tx.send(Ok(()));
                        state
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut state);
                }
            })
            .map_err(|e| StoreError::Io {
                path: path.clone(),
                op: "spawn connection thread",
                source: Arc::new(e),
            })?;
        let closed = || StoreError::ConnectionClosed { path: path.clone() };
        ready_rx.await.map_err(|_| closed())??;
        Ok(ConnThread { jobs, path })
    }

    /// Queues `f` to run on the connection thread without waiting for it;
    /// `f` is dropped unrun if the thread has stopped.
    pub(crate) fn post(&self, f: impl FnOnce(&mut S) + Send + 'static) {
        let _ = self.jobs.send(Box::new(f));
    }

    /// Runs `f` on the connection thread and returns its result.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |state| {
            let _ = tx.send(f(state));
        });
        let closed = || StoreError::ConnectionClosed {
            path: self.path.clone(),
        };
        self.jobs.send(job).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())
    }
}
