//! The fleet registry, `nix/instances.json`: the single source of truth that
//! the flake, OpenTofu and every command read.
//!
//! Its one module, `instances`, reads and checks it: [`Registry::load`]
//! names every problem at once, [`check_file`] is what `fleet check` reports.

mod instances;

pub use instances::{
    check, check_file, host_name_error, prefix_error, CheckReport, Instance, Problem, Problems, Registry, DEFAULT_PATH,
    TOKEN_SECRET_PREFIX,
};
