fn main() {
    xtask::main();
}
