//! clawdinators: the fleet's stages as a library, and the host binary's
//! command line. One folder per stage, each with its flags, a `run` from
//! flags to typed options, and a small face (its `mod.rs`):
//!
//! - [`image`]: build the NixOS image, publish it as a fleet AMI, select and prune AMIs;
//! - [`release`]: every host's system built once per revision, signed into the fleet's cache;
//! - [`bootstrap`]: per-instance bundles in S3 and the repository seeds in them;
//! - [`secrets`]: the age files, Secrets Manager, a host's secrets, GitHub App tokens;
//! - [`registry`]: `nix/instances.json`, the fleet's single source of truth;
//! - [`fleet`]: the registry against EC2: status, deploys, switches, the control API client;
//! - [`host`]: the jobs of a host's own units;
//! - [`memory`]: the agents' shared memory files;
//! - [`audit`]: the tamper-evident trail of every change to AWS;
//! - [`aws`]: how every stage reaches AWS (one shared configuration).
//!
//! Beside them: [`cli`] (the command line's table of contents), [`flags`]
//! (flag groups several commands share), [`ctx`] (what every command gets),
//! [`output`], [`exit`], [`clock`], [`cancel`], [`atomic`] (files written
//! whole), [`digest`], [`process`] (outside tools), [`github`] (GitHub's HTTP API), [`project`] (paths in
//! a checkout) and [`settings`] (the facts user data wrote on a host).

// System calls go through rustix and nix, so the library has no `unsafe`.
// One that must come back is allowed in one module, with a `// SAFETY:`
// comment on each block saying why it is sound.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod atomic;
pub mod audit;
pub mod aws;
pub mod bootstrap;
pub mod build_info;
pub mod cancel;
pub mod cli;
pub mod clock;
pub mod ctx;
pub mod digest;
pub mod exit;
pub mod flags;
pub mod fleet;
pub mod github;
pub mod host;
pub mod image;
pub mod memory;
pub mod output;
pub mod process;
pub mod project;
pub mod registry;
pub mod release;
pub mod secrets;
pub mod settings;
