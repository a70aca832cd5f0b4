//! `cargo xtask`'s own integration tests: doctor, `--local`
//! and the pipeline.

mod doctor;
mod local;
mod pipeline;
mod policies;
mod workflows;
