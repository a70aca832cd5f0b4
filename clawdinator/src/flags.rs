//! Flag groups that several command lines share: the global flags, the
//! registry, the owner of written files, which instances. Like every flags file, it
//! depends on nothing but clap: the workflow and module checks parse command
//! lines against these definitions.

use std::path::PathBuf;

use clap::Args;

/// Flags every command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// AWS region (otherwise AWS_REGION, then the profile's region).
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// A file holding the region, read when --region and AWS_REGION are unset (hosts: /etc/clawdinator/region).
    #[arg(long, global = true, env = "CLAWDINATOR_REGION_FILE")]
    pub region_file: Option<PathBuf>,
    /// AWS shared-config profile to take credentials and region from.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// More log output (repeat for more); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print one JSON document on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Also write each audit record to this bucket (audit/…, never overwritten).
    #[arg(long, global = true, env = "CLAWDINATOR_AUDIT_BUCKET")]
    pub audit_bucket: Option<String>,
    /// The local audit log (default .clawdinators/audit.jsonl).
    #[arg(long, global = true, env = "CLAWDINATOR_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    #[command(flatten)]
    pub timeouts: Timeouts,
}

/// The defaults of [`Timeouts`], in seconds: sized for the largest request
/// sent (a 16 MiB multipart part over a slow uplink) while still failing a
/// dead connection in seconds.
const CONNECT: f64 = 5.0;
const READ: f64 = 30.0;
const ATTEMPT: f64 = 120.0;
const OPERATION: f64 = 300.0;

/// Limits on every AWS call, so that nothing waits forever on a stalled
/// connection (`aws::Timeouts` holds them as durations).
#[derive(Debug, Clone, Copy, PartialEq, Args)]
pub struct Timeouts {
    /// Seconds to open a connection to AWS.
    #[arg(long, global = true, env = "CLAWDINATOR_CONNECT_TIMEOUT", value_name = "SECONDS", default_value_t = CONNECT, value_parser = seconds)]
    pub connect_timeout: f64,
    /// Longest wait, in seconds, for the next bytes of an AWS response.
    #[arg(long, global = true, env = "CLAWDINATOR_READ_TIMEOUT", value_name = "SECONDS", default_value_t = READ, value_parser = seconds)]
    pub read_timeout: f64,
    /// Seconds for one HTTP attempt of an AWS call, start to end.
    #[arg(long, global = true, env = "CLAWDINATOR_ATTEMPT_TIMEOUT", value_name = "SECONDS", default_value_t = ATTEMPT, value_parser = seconds)]
    pub attempt_timeout: f64,
    /// Seconds for one AWS operation, all retries included.
    #[arg(long, global = true, env = "CLAWDINATOR_OPERATION_TIMEOUT", value_name = "SECONDS", default_value_t = OPERATION, value_parser = seconds)]
    pub operation_timeout: f64,
}

/// What a command line without the flags gets (`Global::default()` too).
impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_timeout: CONNECT,
            read_timeout: READ,
            attempt_timeout: ATTEMPT,
            operation_timeout: OPERATION,
        }
    }
}

/// A positive number of seconds that a `Duration` can hold.
fn seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    match std::time::Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(secs),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

/// A positive number of seconds, as a `Duration`.
fn duration_seconds(text: &str) -> Result<std::time::Duration, String> {
    seconds(text).map(std::time::Duration::from_secs_f64)
}

/// How long one git operation may go on: a stalled server otherwise hangs
/// the command.
#[derive(Debug, Clone, Args)]
pub struct GitTimeoutArg {
    /// Seconds one git operation (a clone, a fetch) may take before it is killed.
    #[arg(long = "git-timeout", env = "CLAWDINATOR_GIT_TIMEOUT", value_name = "SECONDS", default_value = "600", value_parser = duration_seconds)]
    pub git_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct InstancesArg {
    /// The fleet registry.
    #[arg(long = "instances", env = "INSTANCES_FILE", default_value = "nix/instances.json")]
    pub path: PathBuf,
}

/// Who owns the files a host-side command writes (names or ids).
#[derive(Debug, Clone, Args)]
pub struct FileOwner {
    /// Owner of the files written (name or uid).
    #[arg(long)]
    pub owner: Option<String>,
    /// Group of the files written (name or gid).
    #[arg(long)]
    pub group: Option<String>,
}

/// Which instances a command that writes works on: named, or all of them
/// said out loud (one of the two is required).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// Only these instances (repeatable).
    #[arg(long)]
    pub instance: Vec<String>,
    /// Every instance of the registry.
    #[arg(long)]
    pub all: bool,
}

impl Selection {
    /// The names chosen; empty means every instance.
    pub fn names(&self) -> Vec<String> {
        if self.all {
            Vec::new()
        } else {
            self.instance.clone()
        }
    }
}

/// `version`: where the build info is.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The host's build info (the flake writes it).
    #[arg(long, default_value = "/etc/clawdinator/build-info.json")]
    pub build_info: PathBuf,
    /// Without it (a checkout): this flake.lock.
    #[arg(long, default_value = "flake.lock")]
    pub lock: PathBuf,
}

/// Which journal `host logs` and `fleet logs` read.
#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    /// The unit: clawdinator (the gateway) or clawdinator-….
    #[arg(long, default_value = "clawdinator")]
    pub unit: String,
    /// How far back: a number and s, min, h or d.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// At most this many lines (1-99999).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=99999))]
    pub lines: u32,
}
