//! One cancellation for a whole command, and the bounded waits that honour it.
//!
//! Ctrl-C and SIGTERM cancel the command: every wait and every long call
//! selects on [`Cancel::cancelled`], so the command stops within a poll of
//! the signal, runs its cleanup, and says what the cleanup did.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use crate::output::Output;

/// The error a cancelled command returns (its message starts with this).
pub const INTERRUPTED: &str = "interrupted";

/// tokio-util's token, with the waits a command needs on top: clones share
/// one cancellation.
#[derive(Clone, Default)]
pub struct Cancel(CancellationToken);

impl Cancel {
    /// A cancellation nothing triggers but [`Cancel::cancel`].
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancelled by the first Ctrl-C (SIGINT) or SIGTERM. Needs a tokio runtime.
    pub fn on_signals() -> Cancel {
        let cancel = Cancel::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            trigger.cancel();
        });
        cancel
    }

    pub fn cancel(&self) {
        self.0.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }

    /// Run `work` unless cancelled first; `what` names what was interrupted.
    pub async fn guard<T>(&self, what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            r = work => r,
            _ = self.cancelled() => bail!("{INTERRUPTED} while {what}"),
        }
    }

    /// Sleep, or fail at once when cancelled.
    pub async fn sleep(&self, what: &str, duration: Duration) -> Result<()> {
        self.guard(what, async {
            tokio::time::sleep(duration).await;
            Ok(())
        })
        .await
    }
}

/// What one poll of a wait found.
pub enum Poll<T> {
    Done(T),
    /// Not yet; the state to show (e.g. `pending 40%`).
    Pending(String),
}

/// A bounded, cancellable, visible wait: polls every `every` until done,
/// `limit` passes (an error naming the limit and how to raise it) or the
/// command is cancelled. Shows the state on a terminal and ends with one line.
pub struct Wait<'a> {
    pub what: String,
    pub every: Duration,
    pub limit: Duration,
    /// How to raise the limit, for the error when it passes.
    pub raise: &'static str,
    pub cancel: &'a Cancel,
    pub out: &'a Output,
}

impl Wait<'_> {
    pub async fn until<T, F, Fut>(&self, mut poll: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Poll<T>>>,
    {
        let started = Instant::now();
        let spinner = self.out.spinner(&self.what);
        let result = loop {
            let state = match self.cancel.guard(&format!("waiting for {}", self.what), poll()).await {
                Ok(Poll::Done(value)) => break Ok(value),
                Ok(Poll::Pending(state)) => state,
                Err(err) => break Err(err),
            };
            spinner.set_message(format!("{}: {state}", self.what));
            if started.elapsed() >= self.limit {
                break Err(anyhow::anyhow!("{} still {state} after {:?} ({})", self.what, self.limit, self.raise));
            }
            let pause = self.every.min(self.limit.saturating_sub(started.elapsed())).max(Duration::from_millis(1));
            if let Err(err) = self.cancel.sleep(&format!("waiting for {}", self.what), pause).await {
                break Err(err);
            }
        };
        spinner.finish_and_clear();
        let verdict = if result.is_ok() { "done" } else { "stopped" };
        self.out.note(format!("{}: {verdict} after {:.1} s", self.what, started.elapsed().as_secs_f64()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clone cancels for all: a wait guarded by the original stops with
    /// the error that names what was interrupted, and later waits stop at once.
    #[tokio::test]
    async fn a_clone_cancels_every_wait() {
        let cancel = Cancel::new();
        let trigger = cancel.clone();
        assert!(!cancel.is_cancelled());
        tokio::spawn(async move { trigger.cancel() });
        let err = cancel.guard("waiting", std::future::pending::<Result<()>>()).await.unwrap_err();
        assert_eq!(err.to_string(), format!("{INTERRUPTED} while waiting"));
        assert!(cancel.is_cancelled());
        let err = cancel.sleep("sleeping", Duration::from_secs(3600)).await.unwrap_err();
        assert_eq!(err.to_string(), format!("{INTERRUPTED} while sleeping"));
    }

    /// Work that finishes first is returned as it is.
    #[tokio::test]
    async fn work_done_before_a_cancel_is_kept() {
        let cancel = Cancel::default();
        assert_eq!(cancel.guard("adding", async { Ok(1 + 1) }).await.unwrap(), 2);
    }
}
