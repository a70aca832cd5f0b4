//! The program hosts run as `clawdinator`: the stages' commands, no dev harness.

fn main() {
    clawdinator::cli::main();
}
