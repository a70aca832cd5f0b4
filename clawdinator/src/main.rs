//! The program hosts run as `clawdinator`: the stages' commands, no dev harness.

// What ships has no `unsafe`: system calls go through the library's crates.
#![forbid(unsafe_code)]

fn main() {
    clawdinator::cli::main();
}
