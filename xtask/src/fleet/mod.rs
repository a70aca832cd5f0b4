//! The fleet stage: the registry (`nix/instances.json`), the single source of
//! truth that the flake, OpenTofu and every command read.

pub mod registry;

pub use registry::{
    check, prefix_error, run, Instance, Problem, Problems, Registry, DEFAULT_PATH, TOKEN_SECRET_PREFIX,
};
