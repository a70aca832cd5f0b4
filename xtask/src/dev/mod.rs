//! Developer commands: `doctor`, `test`, `bench`, and the throwaway inputs
//! that `--local`, tests and benchmarks use.

pub mod bench;
pub mod doctor;
pub mod fixtures;
pub mod lambda_smoke;
pub mod loopback;
pub mod nix_lib;
pub mod nix_module;
pub mod opentofu;
pub mod package;
pub mod selftest;
pub mod tools;
pub mod workflows;
