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
    #[arg(long, global = true, env = "AWS_REGION_FILE")]
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
