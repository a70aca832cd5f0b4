//! One cancellation for a whole command, and the bounded waits that honour it.
//!
//! Ctrl-C and SIGTERM cancel the command: every wait and every long call
//! selects on [`Cancel::cancelled`], so the command stops within a poll of
//! the signal, runs its cleanup, and says what the cleanup did.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::watch;

use crate::output::Output;

/// The error a cancelled command returns (its message starts with this).
pub const INTERRUPTED: &str = "interrupted";

#[derive(Clone)]
pub struct Cancel {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A cancellation nothing triggers but [`Cancel::cancel`].
    pub fn new() -> Cancel {
        let (tx, rx) = watch::channel(false);
        Cancel { tx: Arc::new(tx), rx }
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
        let _ = self.tx.send(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|c| *c).await;
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
