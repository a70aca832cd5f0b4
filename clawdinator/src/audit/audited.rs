//! The one way a command that changes AWS is recorded. Its report says
//! what it made, changed or removed ([`Audited`]); [`Entry::record`] runs
//! the command between its `started` and `finished` records. A new audited
//! command implements [`Audited`] for its report and calls
//! `Entry::named("stage verb", &names, dry_run).record(ctx, &aws, work)`.

use std::future::Future;

use anyhow::Result;

use super::trail::{around, targets, Entry};
use crate::aws::Aws;
use crate::ctx::Ctx;

/// A report of a command that changes AWS.
pub trait Audited {
    /// The resources the command made, changed or removed, as its
    /// `finished` record lists them.
    fn resources(&self) -> Vec<String>;
}

impl<'a> Entry<'a> {
    /// `command` on the instances `names` (none: every one, recorded as `all`).
    pub fn named(command: &'a str, names: &[String], dry_run: bool) -> Entry<'a> {
        Entry { command, targets: targets(names), dry_run }
    }

    /// Run `work` between its `started` record (a failure to write it stops
    /// the command before it changes anything) and its `finished` one; a dry
    /// run records nothing.
    pub async fn record<T: Audited>(self, ctx: &Ctx, aws: &Aws, work: impl Future<Output = Result<T>>) -> Result<T> {
        around(ctx, aws, self, work, T::resources).await
    }
}
