//! `cargo xtask`'s own integration tests: doctor, `--local`
//! and the pipeline.

mod emulator;
mod local;
mod pipeline;
mod policies;
mod workflows;
