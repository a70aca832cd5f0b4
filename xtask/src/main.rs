use clap::Parser;

fn main() {
    let cli = xtask::flags::Xtask::parse();
    if let Err(err) = xtask::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(xtask::output::exit_code(&err));
    }
}
