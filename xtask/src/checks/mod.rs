//! The non-Rust checks `cargo xtask test` runs, one module per thing
//! checked: the module graph and crate layout, Nix (the flake lock, nix/lib,
//! the NixOS module, the metadata service's rules on a real kernel),
//! OpenTofu, the workflows, and (as tests) the runbooks' commands.

pub mod flake_lock;
pub mod imds;
pub mod layout;
pub mod modgraph;
pub mod nix_lib;
pub mod nix_module;
pub mod opentofu;
#[cfg(test)]
mod runbooks;
pub mod workflows;
