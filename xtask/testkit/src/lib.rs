//! The tests' harness, a dev-dependency only (and `cargo xtask`'s, for
//! `--local`, `bench` and `test`): nothing here ships to a host or Lambda.
//!
//! - [`emulator`]: the pinned moto server with the project's shim, on loopback;
//! - [`env`]: a fresh emulator, bucket and scratch directory per test, and the CLI runner;
//! - [`fixtures`]: registries, age keys and secrets, git repositories, raw images, GitHub App keys;
//! - [`loopback`]: stand-ins' HTTP request reader and the Lambda function URL event;
//! - [`iam`]: the policy judge, the IAM simulator on every call the emulator logged;
//! - [`policies`]: the fleet's IAM policies rendered from the templates OpenTofu applies;
//! - [`proxy`]: an endpoint that behaves like AWS (latency, bandwidth, seeded faults) in front of the emulator;
//! - [`actions`]: GitHub Actions expressions, evaluated by GitHub's own library;
//! - [`npm`], [`venv`]: pinned npm packages and PyPI tools in the checkout.

pub mod actions;
pub mod emulator;
pub mod env;
pub mod fixtures;
pub mod iam;
pub mod loopback;
pub mod npm;
pub mod policies;
pub mod proxy;
pub mod venv;

use std::path::{Path, PathBuf};

/// The checkout's root: the test kit is only ever built from a checkout.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the test kit lives in xtask/testkit")
}
