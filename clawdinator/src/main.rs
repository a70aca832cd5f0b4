//! The program as hosts run it: the same commands as `cargo xtask`.

fn main() {
    xtask::main();
}
