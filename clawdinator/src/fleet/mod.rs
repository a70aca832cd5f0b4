//! The fleet stage: the registry (`nix/instances.json`) against EC2.
//!
//! Modules: [`flags`] (the command line), [`status`] (the registry
//! checked alone, and its drift from EC2), `deploy` (replace instances from a fleet AMI, canary
//! first), `lane` (every per-host roll: canary, waves, stop at the first
//! failure), `host_run` (one SSM document on one host's instance),
//! `switch` (running hosts to a release's systems through SSM),
//! [`control`] (the host's signed client for the control API), [`helper`]
//! (the root service through which agents reach it, and `fleet control`), `ops` (a host's logs
//! and unit restarts through SSM) and `refresh` (secrets again on running
//! hosts).

pub mod control;
mod deploy;
pub mod flags;
pub mod helper;
mod host_run;
mod lane;
mod ops;
mod refresh;
pub mod status;
mod switch;

use anyhow::Result;

use crate::ctx::Ctx;
use flags::FleetCmd;

/// Carry out one `fleet` command: each command's `run` is beside its code.
pub async fn run(ctx: &Ctx, cmd: FleetCmd) -> Result<()> {
    match cmd {
        FleetCmd::Check(args) => args.run(ctx),
        FleetCmd::Status(args) => args.run(ctx).await,
        FleetCmd::Deploy(args) => args.run(ctx).await,
        FleetCmd::Switch(args) => args.run(ctx).await,
        FleetCmd::RefreshSecrets(args) => args.run(ctx).await,
        FleetCmd::Logs(args) => args.run(ctx).await,
        FleetCmd::Restart(args) => args.run(ctx).await,
        FleetCmd::ControlHelper(args) => args.run(ctx).await,
        FleetCmd::Control(args) => args.run(ctx).await,
    }
}
