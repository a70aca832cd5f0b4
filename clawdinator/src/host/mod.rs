//! The host's own jobs, run by the units the NixOS module defines. Each
//! touches only files it owns.
//!
//! Modules: [`flags`] (the command line), [`workspace`] (the agent
//! workspace and cron store), `efs` (the TLS tunnel to EFS), `exec`
//! (the gateway with secrets in its environment), [`record`] (what the host
//! runs), `switch` (a signed system from the fleet cache, health-gated),
//! `updates` (first switch and self-update from the newest release),
//! `refresh` (secrets again after a
//! rotation), [`ops`] (a unit's logs and restart), [`publish`] (the
//! public PR-intent tree), `pi_auth` (the pi coding agent's credentials)
//! and [`github_sync`]
//! (open pull requests and issues into shared memory).

mod efs;
mod exec;
pub mod flags;
pub mod github_sync;
pub mod ops;
mod pi_auth;
pub mod publish;
pub mod record;
mod refresh;
mod switch;
mod updates;
pub mod workspace;

use anyhow::Result;

use crate::ctx::Ctx;
use flags::HostCmd;

/// Carry out one `host` command: each command's `run` is beside its code.
pub fn run(ctx: &Ctx, cmd: HostCmd) -> Result<()> {
    match cmd {
        HostCmd::WorkspaceSeed(args) => args.run(ctx),
        HostCmd::Switch(args) => args.run(ctx),
        HostCmd::Exec(args) => args.run(),
        HostCmd::EfsStunnelConfig(args) => args.run(ctx),
        HostCmd::Logs(args) => args.run(),
        HostCmd::Restart(args) => args.run(ctx),
        HostCmd::PiAuth(args) => args.run(ctx),
        HostCmd::PublishTree(args) => args.run(ctx),
        HostCmd::RefreshSecrets(args) => args.run(ctx),
        HostCmd::FirstSwitch(args) => args.first_switch(ctx),
        HostCmd::SelfUpdate(args) => args.self_update(ctx),
        HostCmd::GithubSync(args) => args.run(ctx),
    }
}
