//! A host's own units: their jobs (memory, workspace, EFS tunnel, first
//! switch, self-update, GitHub snapshot), the release lane's `host switch`
//! (stand-ins, and a real nix against the emulator: `cache`)
//! and the public tree's `host publish-tree`.

mod cache;
mod cron_store;
mod github_sync;
mod jobs;
mod proposals;
mod publish;
mod refresh;
pub(crate) mod switch;
