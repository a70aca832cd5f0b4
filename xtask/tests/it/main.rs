//! `cargo xtask`'s own integration tests: the emulator harness, `--local`
//! and the pipeline.

mod emulator;
mod local;
mod pipeline;
mod policies;
mod workflows;
