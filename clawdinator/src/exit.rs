//! How a command ends: the exit code says what kind of failure it was
//! (1 an error, 2 a usage error, 3 drift), the message says what to do.

/// A mistake in how the command was called, found after parsing: the CLI
/// exits 2 for it, as clap does for its own.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `fleet status` found drift: its report was printed; the CLI exits 3.
#[derive(Debug)]
pub struct DriftFound(pub usize);

impl std::fmt::Display for DriftFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} drift finding(s) between the registry and EC2", self.0)
    }
}

impl std::error::Error for DriftFound {}

/// The exit code for an error: 2 for usage errors, 3 for drift, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else if err.chain().any(|e| e.is::<DriftFound>()) {
        3
    } else {
        1
    }
}

/// Print the error (with its causes) and exit with its code; return on success.
pub fn on_error(result: anyhow::Result<()>) {
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
