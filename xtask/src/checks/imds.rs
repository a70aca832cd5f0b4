//! The metadata service refused by default, performed on a real kernel (a
//! check of `cargo xtask test`). `nix/tests/module.nix` hands back what a
//! host evaluates: the firewall's commands (`extraCommands`) and the
//! PR-intent publisher's ExecStartPre and ExecStopPost scripts. They run
//! here as the host runs them, `iptables` and `ip6tables` being shell
//! functions that call the backend under test, in network, mount and
//! cgroup namespaces of their own with a listener on both metadata
//! addresses. Then processes try to connect: root (let through), a system
//! user's uid as the agents' is and a nixbld builder's (refused), and any
//! uid inside the publisher's cgroup (let through while the publisher runs,
//! refused once it stops). Both iptables backends run: nf_tables (NixOS's
//! `pkgs.iptables`, what a host runs) and legacy.
//!
//! The nix daemon is run too, with the `allowed-users` and `trusted-users`
//! a host evaluates: a non-root client is refused (and admitted under
//! NixOS's default `allowed-users = *`, so the test sees the door).
//!
//! It needs root (namespaces, iptables, setuid, cgroups) and the Debian
//! `iptables` package; without them it is skipped, saying why, never
//! passed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

/// What the check found: passed, or skipped and why.
pub enum Tested {
    Passed(String),
    Skipped(String),
}

/// The metadata service's rules as a host evaluates them (module.nix's `metadata`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    firewall: String,
    firewall_stop: String,
    allow: String,
    revoke: String,
    cgroup: String,
    chain: String,
    addresses: Vec<String>,
    #[serde(rename = "allowed-users")]
    allowed_users: Vec<String>,
    #[serde(rename = "trusted-users")]
    trusted_users: Vec<String>,
}

/// Who tries: root, a uid as NixOS gives its system users (the agents'
/// user is one), nixbld1's uid (a build the daemon runs), and a dynamic
/// user's uid (the publisher's range).
const ROOT: u32 = 0;
const AGENTS: u32 = 985;
const BUILDER: u32 = 30001;
const DYNAMIC: u32 = 61234;

/// The programs the check runs; the iptables ones come with Debian's `iptables`.
const PROGRAMS: [&str; 10] = [
    "unshare",
    "nsenter",
    "ip",
    "python3",
    "iptables-nft",
    "ip6tables-nft",
    "iptables-legacy",
    "ip6tables-legacy",
    "nix-daemon",
    "nix",
];

/// Moves itself into the cgroup directory `$0`, then runs the rest.
const ENTER_CGROUP: &str = r#"echo $$ > "$0/cgroup.procs" && exec "$@""#;

/// Inside the new namespaces: cgroup2 mounted at /sys/fs/cgroup (rooted at
/// the test's cgroup), no rate limit on the rejections' ICMP, loopback up with the metadata addresses ($1, $2) and
/// a source address per family ($3, $4), then the listener ($5) under Python ($6).
const SETUP: &str = r#"set -e
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo 0 > /proc/sys/net/ipv4/icmp_ratelimit
echo 0 > /proc/sys/net/ipv6/icmp/ratelimit
ip link set lo up
ip addr add "$1"/32 dev lo
ip addr add "$3"/32 dev lo
ip -6 addr add "$2"/128 dev lo nodad
ip -6 addr add "$4"/128 dev lo nodad
exec "$6" -c "$5" "$1" "$2""#;

/// A client's source address per family, apart from the metadata addresses:
/// REJECT answers the source, and an answer to a metadata address would be
/// rejected in turn (the client would time out instead of being refused).
const SOURCE_V4: &str = "10.254.0.1";
const SOURCE_V6: &str = "fd00:c1a::1";

/// Accepts on port 80 of each address given, says "ready", serves forever.
const LISTENER: &str = r#"
import socket, sys, threading
def serve(s):
    while True:
        c, _ = s.accept()
        c.close()
for address in sys.argv[1:]:
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, 80))
    s.listen(64)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// For each uid of $4… (no other groups) and each address of $3 (comma
/// separated), connect to port 80 from the family's source ($1, $2), each
/// in a child of its own, all at once (a refusal over IPv6 takes about a
/// second, the SYN's first retransmission);
/// print "uid address connected|refused|error".
const CONNECT: &str = r#"
import os, socket, sys
source4, source6, addresses = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
children = []
for uid in map(int, sys.argv[4:]):
    for address in addresses:
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                v6 = ":" in address
                s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(15)
                s.bind((source6 if v6 else source4, 0))
                s.connect((address, 80))
                os._exit(0)
            except ConnectionRefusedError:
                os._exit(3)
            except BaseException as e:
                print(f"uid {uid} to {address}: {e!r}", file=sys.stderr, flush=True)
                os._exit(1)
        children.append((pid, uid, address))
for pid, uid, address in children:
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(uid, address, {0: "connected", 3: "refused"}.get(code, "error"), flush=True)
"#;

/// As uid $1 (no other groups), run the rest.
const AS_USER: &str = r#"
import os, sys
uid = int(sys.argv[1])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
os.execvp(sys.argv[2], sys.argv[2:])
"#;

pub fn check(sh: &xshell::Shell, root: &Path) -> Result<Tested> {
    let found = match prerequisites()? {
        Ok(found) => found,
        Err(why) => return Ok(Tested::Skipped(why)),
    };
    let meta = evaluate(sh, root, &found.nixpkgs_lib)?;
    let python = interpreter(&found.tools["python3"])?;

    let mut done = Vec::new();
    for backend in ["nft", "legacy"] {
        let tool = |family: &str| found.tools[format!("{family}-{backend}").as_str()].display().to_string();
        let functions =
            format!("iptables() {{ {} \"$@\"; }}\nip6tables() {{ {} \"$@\"; }}\n", tool("iptables"), tool("ip6tables"));
        firewall(&meta, &found.cgroup2, &python, &functions, [tool("iptables"), tool("ip6tables")])
            .with_context(|| format!("with iptables-{backend}"))?;
        done.push(format!("iptables-{backend}"));
    }
    let daemon = nix_daemon(&meta, &python, &found.tools)?;
    Ok(Tested::Passed(format!(
        "metadata service (IPv4, IPv6; {}): root and the running publisher's cgroup reach it; the agents' uid, a nixbld uid and the publisher's own uid outside its cgroup are refused; reloads keep one copy of each rule and drop a gone cgroup's; a refill that breaks off leaves it refused; the publisher's stop takes its rule back; {daemon}",
        done.join(", ")
    )))
}

/// What the check needs from the machine it runs on.
struct Found {
    nixpkgs_lib: PathBuf,
    /// Each of PROGRAMS, by name.
    tools: BTreeMap<&'static str, PathBuf>,
    cgroup2: PathBuf,
}

/// What the check needs, found; or (the inner Err) why it is skipped: a
/// machine without them skips the check, saying why, and never passes it.
fn prerequisites() -> Result<Result<Found, String>> {
    let Some(nixpkgs_lib) = crate::checks::nix_module::nixpkgs_lib() else {
        return Ok(Err("no nixpkgs lib to evaluate the module with (NIXPKGS_LIB)".into()));
    };
    if find("nix-instantiate").is_none() {
        return Ok(Err("nix-instantiate is not installed (apt-get install nix-bin)".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Err(
            "it needs root (network, mount and cgroup namespaces, iptables, connections as other uids): run as root, as .ci/run does".into(),
        ));
    }
    let mut tools = BTreeMap::new();
    for program in PROGRAMS {
        match find(program) {
            Some(path) => tools.insert(program, path),
            None => {
                return Ok(Err(format!(
                    "{program} is not installed (iptables-nft and iptables-legacy: apt-get install iptables, as .ci/run does; nix-daemon: nix-bin; unshare, nsenter: util-linux; ip: iproute2)"
                )))
            }
        };
    }
    let Some(cgroup2) = cgroup2_mount()? else {
        return Ok(Err("no cgroup2 hierarchy is mounted (the publisher is let through by its cgroup)".into()));
    };
    Ok(Ok(Found { nixpkgs_lib, tools, cgroup2 }))
}

/// The metadata service's rules as `nix/tests/module.nix` evaluates them.
fn evaluate(sh: &xshell::Shell, root: &Path, nixpkgs_lib: &Path) -> Result<Metadata> {
    let harness = root.join("nix/tests/module.nix");
    let out = xshell::cmd!(
        sh,
        "nix-instantiate --eval --strict --json --store dummy:// {harness} --arg nixpkgsLib {nixpkgs_lib} -A metadata"
    )
    .quiet()
    .ignore_status()
    .output()?;
    ensure!(out.status.success(), "{} does not evaluate:\n{}", harness.display(), String::from_utf8_lossy(&out.stderr));
    let meta: Metadata =
        serde_json::from_slice(&out.stdout).context("module.nix's metadata is not what it should be")?;
    ensure!(meta.addresses.len() == 2, "expected an IPv4 and an IPv6 metadata address, got {:?}", meta.addresses);
    Ok(meta)
}

/// The Python interpreter itself, not a version manager's shim in front of
/// it (see `Namespace::python`).
fn interpreter(python3: &Path) -> Result<String> {
    let out = command(python3).args(["-c", "import sys; print(sys.executable)"]).output()?;
    ensure!(out.status.success(), "python3 does not run: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The firewall scenario with one backend; `functions` define `iptables`
/// and `ip6tables`, `listing` are the backend's two programs. Its steps run
/// in order on one namespace: each starts from the rules the last left.
fn firewall(meta: &Metadata, cgroup2: &Path, python: &str, functions: &str, listing: [String; 2]) -> Result<()> {
    let ns = Namespace::start(cgroup2, &meta.addresses, python)?;
    let scenario = Scenario { ns, meta, functions, listing, firewall: format!("{functions}{}", meta.firewall) };
    let first = scenario.starts()?;
    scenario.broken_refill(&first)?;
    scenario.publisher_runs(&first)?;
    scenario.gone_cgroup(&first)?;
    scenario.stops()
}

/// One backend's firewall scenario: the namespace it runs in and the
/// host's scripts made to call that backend.
struct Scenario<'a> {
    ns: Namespace,
    meta: &'a Metadata,
    /// Shell functions that make `iptables` and `ip6tables` the backend.
    functions: &'a str,
    /// The backend's two programs, which list the rules.
    listing: [String; 2],
    /// The firewall's commands, after the functions.
    firewall: String,
}

impl Scenario<'_> {
    /// Each of `uids` in `cgroup` ("" for none) reaches each of `addresses`
    /// if `want`, else is refused; `when` names the step in the error.
    fn expect(&self, addresses: &[String], uids: &[u32], cgroup: &str, want: bool, when: &str) -> Result<()> {
        for (uid, address, reached) in self.ns.reaches(cgroup, uids, addresses)? {
            let place = if cgroup.is_empty() { String::new() } else { format!(" in {cgroup}") };
            ensure!(
                reached == want,
                "{when}: uid {uid}{place} {} {address}",
                if reached { "reaches" } else { "is refused" }
            );
        }
        Ok(())
    }

    /// `expect` for both metadata addresses.
    fn expect_all(&self, uids: &[u32], cgroup: &str, want: bool, when: &str) -> Result<()> {
        self.expect(&self.meta.addresses, uids, cgroup, want, when)
    }

    /// OUTPUT and the metadata chain as both of the backend's programs list them.
    fn rules(&self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for program in &self.listing {
            for chain in ["OUTPUT", self.meta.chain.as_str()] {
                let out = self.ns.run("", &[program.as_str(), "-w", "-S", chain])?;
                ensure!(out.status.success(), "{program} -S {chain}: {}", String::from_utf8_lossy(&out.stderr));
                lines.extend(String::from_utf8_lossy(&out.stdout).lines().map(|l| format!("{program} {l}")));
            }
        }
        Ok(lines)
    }

    /// The firewall's commands as the host runs them (root, no service's
    /// cgroup, `bash -e`); `step` names the run in the error.
    fn start_firewall(&self, step: &'static str) -> Result<()> {
        self.ns.script("", "-e", &self.firewall).context(step)
    }

    /// One of the publisher's scripts (its ExecStartPre `allow` or
    /// ExecStopPost `revoke`), as root inside the publisher's cgroup.
    fn publisher(&self, script: &str, step: &'static str) -> Result<()> {
        self.ns.script(&self.meta.cgroup, "", &format!("{}{script}", self.functions)).context(step)
    }

    /// Everyone is answered before the rules, only root after the start;
    /// a reload changes nothing. Gives the rules after the start, which
    /// the later steps must come back to.
    fn starts(&self) -> Result<Vec<String>> {
        self.expect_all(
            &[ROOT, AGENTS, BUILDER, DYNAMIC],
            "",
            true,
            "without the rules (the listener answers everyone)",
        )?;

        self.start_firewall("the firewall's commands")?;
        self.expect_all(&[ROOT], "", true, "after the firewall starts")?;
        self.expect_all(&[AGENTS, BUILDER, DYNAMIC], "", false, "after the firewall starts")?;
        let first = self.rules()?;
        ensure!(
            count(&first, &format!("-j {}", self.meta.chain)) == 2,
            "one jump to the chain per family expected:\n{}",
            first.join("\n")
        );
        ensure!(count(&first, "-hold") == 0, "the hold is left in OUTPUT:\n{}", first.join("\n"));
        ensure!(
            count(&first, "-m cgroup") == 0,
            "a cgroup is let through with no publisher running:\n{}",
            first.join("\n")
        );

        self.start_firewall("the firewall's commands, again (a reload)")?;
        ensure!(
            self.rules()? == first,
            "a reload changed the rules:\nbefore\n{}\nafter\n{}",
            first.join("\n"),
            self.rules()?.join("\n")
        );
        Ok(first)
    }

    /// A refill that breaks off after the flush (here: IPv4's root rule
    /// fails, and the script stops there) leaves that address refused to
    /// all, root too, until a start completes; IPv6's chain is untouched.
    fn broken_refill(&self, first: &[String]) -> Result<()> {
        let meta = self.meta;
        let root_rule = "-m owner --uid-owner 0 -j RETURN";
        let broken = format!(
            "{}{}",
            self.functions,
            meta.firewall.replacen(root_rule, &format!("{root_rule} --no-such-option"), 1)
        );
        ensure!(broken != self.firewall, "the firewall's commands no longer let root through by --uid-owner 0");
        ensure!(self.ns.script("", "-e", &broken).is_err(), "the broken refill did not fail");
        let (v4, v6) = (&meta.addresses[..1], &meta.addresses[1..]);
        self.expect(v4, &[ROOT, AGENTS, BUILDER], "", false, "after IPv4's refill broke off")?;
        self.expect(v6, &[ROOT], "", true, "after IPv4's refill broke off")?;
        self.expect(v6, &[AGENTS, BUILDER], "", false, "after IPv4's refill broke off")?;
        self.start_firewall("the firewall's commands after a broken refill")?;
        ensure!(
            self.rules()? == first,
            "a start after a broken refill left other rules:\n{}",
            self.rules()?.join("\n")
        );
        Ok(())
    }

    /// The publisher starts, the firewall reloads while it runs, and it stops.
    fn publisher_runs(&self, first: &[String]) -> Result<()> {
        let publisher = self.meta.cgroup.as_str();
        // systemd makes its cgroup, root runs ExecStartPre from inside it
        // (twice: a second copy must not pile up).
        self.ns.make_cgroup(publisher)?;
        for _ in 0..2 {
            self.publisher(&self.meta.allow, "the publisher's ExecStartPre")?;
        }
        let running = self.rules()?;
        ensure!(count(&running, "-m cgroup") == 2, "one cgroup rule per family expected:\n{}", running.join("\n"));
        self.expect_all(&[DYNAMIC, AGENTS], publisher, true, "while the publisher runs")?;
        self.expect_all(&[ROOT], "", true, "while the publisher runs")?;
        self.expect_all(&[AGENTS, BUILDER, DYNAMIC], "", false, "while the publisher runs, outside its cgroup")?;

        // A firewall reload while it runs keeps it let through, once.
        self.start_firewall("the firewall's commands while the publisher runs")?;
        let reloaded = self.rules()?;
        ensure!(
            count(&reloaded, "-m cgroup") == 2,
            "after a reload, one cgroup rule per family expected:\n{}",
            reloaded.join("\n")
        );
        self.expect_all(&[DYNAMIC], publisher, true, "after a reload while the publisher runs")?;
        self.expect_all(&[AGENTS, BUILDER], "", false, "after a reload while the publisher runs")?;

        // It stops: ExecStopPost from inside its cgroup, then systemd removes it.
        self.publisher(&self.meta.revoke, "the publisher's ExecStopPost")?;
        self.expect_all(&[DYNAMIC], publisher, false, "after the publisher stops")?;
        ensure!(self.rules()? == first, "the publisher's stop left rules behind:\n{}", self.rules()?.join("\n"));
        self.ns.remove_cgroup(publisher)
    }

    /// The next run, with a reload between its stop and its cgroup's
    /// removal: the reload re-adds the rule, which then names a gone cgroup.
    /// The next reload drops it (and iptables-legacy, which refuses every
    /// change while it is there, takes changes again); the run after that
    /// is let through by its new cgroup.
    fn gone_cgroup(&self, first: &[String]) -> Result<()> {
        let (meta, publisher) = (self.meta, self.meta.cgroup.as_str());
        self.ns.make_cgroup(publisher)?;
        self.publisher(&meta.allow, "the publisher's ExecStartPre, second run")?;
        self.publisher(&meta.revoke, "the publisher's ExecStopPost, second run")?;
        self.start_firewall("the firewall's commands as the publisher stops")?;
        self.ns.remove_cgroup(publisher)?;
        self.start_firewall("the firewall's commands with a rule for a gone cgroup")?;
        ensure!(self.rules()? == first, "a reload left the rule of a gone cgroup:\n{}", self.rules()?.join("\n"));
        self.expect_all(&[AGENTS, BUILDER, DYNAMIC], "", false, "after a reload dropped a gone cgroup's rule")?;
        self.ns.make_cgroup(publisher)?;
        self.publisher(&meta.allow, "the publisher's ExecStartPre, third run")?;
        self.expect_all(&[DYNAMIC], publisher, true, "while the publisher runs again")?;
        self.publisher(&meta.revoke, "the publisher's ExecStopPost, third run")?;
        self.expect_all(&[DYNAMIC], publisher, false, "after the publisher stops again")?;
        self.ns.remove_cgroup(publisher)?;

        // A later start of the firewall adds nothing for the gone cgroup.
        self.start_firewall("the firewall's commands after the publisher stopped")?;
        ensure!(
            self.rules()? == first,
            "a reload after the publisher stopped changed the rules:\n{}",
            self.rules()?.join("\n")
        );
        Ok(())
    }

    /// The firewall's stop leaves the refusal in place.
    fn stops(&self) -> Result<()> {
        self.ns
            .script("", "-e", &format!("{}{}", self.functions, self.meta.firewall_stop))
            .context("the firewall's stop commands")?;
        self.expect_all(&[AGENTS, BUILDER], "", false, "after the firewall stops")?;
        self.expect_all(&[ROOT], "", true, "after the firewall stops")
    }
}

/// How many of `lines` contain `what`.
fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| l.contains(what)).count()
}

/// The nix daemon with the evaluated users: root is served, the agents'
/// stand-in is refused; with NixOS's default (`*`) it would be served.
fn nix_daemon(meta: &Metadata, python: &str, tools: &BTreeMap<&str, PathBuf>) -> Result<String> {
    let daemon = Daemon::new(&meta.trusted_users, python, tools)?;
    let (root, agents, log) = daemon.serve(&meta.allowed_users)?;
    ensure!(root, "with allowed-users = {:?}, root is not served by the nix daemon:\n{log}", meta.allowed_users);
    ensure!(!agents, "with allowed-users = {:?}, uid {AGENTS} is served by the nix daemon", meta.allowed_users);
    ensure!(
        log.contains("is not allowed to connect to the Nix daemon"),
        "the nix daemon did not say why it refused uid {AGENTS}:\n{log}"
    );
    let (_, open, log) = daemon.serve(&["*".to_string()])?;
    if !open {
        bail!("with NixOS's default allowed-users = *, uid {AGENTS} is not served either: the test cannot tell the settings apart\n{log}");
    }
    Ok(format!(
        "the nix daemon (allowed-users = {}, trusted-users = {}) serves root and refuses uid {AGENTS}, which NixOS's default (*) would serve",
        meta.allowed_users.join(" "),
        meta.trusted_users.join(" ")
    ))
}

/// A nix daemon of the test's own: its store, nix.conf, socket and log in
/// a temporary directory, and a HOME every uid may write (clients keep
/// their cache there).
struct Daemon<'a> {
    dir: tempfile::TempDir,
    home: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    trusted: &'a [String],
    python: &'a str,
    nix_daemon: PathBuf,
    nix: PathBuf,
}

impl<'a> Daemon<'a> {
    fn new(trusted: &'a [String], python: &'a str, tools: &BTreeMap<&str, PathBuf>) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        // Other uids reach the socket and HOME through it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home)?;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777))?;
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf)?;
        let (socket, log) = (dir.path().join("socket"), dir.path().join("daemon.log"));
        let (nix_daemon, nix) = (tools["nix-daemon"].clone(), tools["nix"].clone());
        Ok(Daemon { dir, home, conf, socket, log, trusted, python, nix_daemon, nix })
    }

    /// Serve with `allowed` as allowed-users: whether root and the agents'
    /// uid were served, and what the daemon logged.
    fn serve(&self, allowed: &[String]) -> Result<(bool, bool, String)> {
        std::fs::write(
            self.conf.join("nix.conf"),
            format!(
                "allowed-users = {}\ntrusted-users = {}\nbuild-users-group =\nexperimental-features = nix-command\n",
                allowed.join(" "),
                self.trusted.join(" ")
            ),
        )?;
        let _ = std::fs::remove_file(&self.socket);
        let mut daemon = self.spawn()?;
        let result = self
            .wait_for_socket(&mut daemon)
            .and_then(|()| Ok((self.ping(ROOT)?, self.ping(AGENTS)?, std::fs::read_to_string(&self.log)?)));
        let _ = daemon.kill();
        let _ = daemon.wait();
        result
    }

    fn spawn(&self) -> Result<Child> {
        command(&self.nix_daemon)
            .arg("--store")
            .arg(self.dir.path().join("store"))
            .env("NIX_CONF_DIR", &self.conf)
            .env("NIX_DAEMON_SOCKET_PATH", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log)?)
            .spawn()
            .context("cannot start nix-daemon")
    }

    /// Until the daemon makes its socket; Err if it exits or takes 20 s.
    fn wait_for_socket(&self, daemon: &mut Child) -> Result<()> {
        let start = Instant::now();
        while !self.socket.exists() {
            ensure!(daemon.try_wait()?.is_none(), "nix-daemon exited: {}", std::fs::read_to_string(&self.log)?);
            ensure!(start.elapsed() < Duration::from_secs(20), "nix-daemon made no socket in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Whether `nix store ping` as `uid` is served.
    fn ping(&self, uid: u32) -> Result<bool> {
        let status = command(self.python)
            .args(["-c", AS_USER, &uid.to_string()])
            .arg(&self.nix)
            .args(["store", "ping", "--store", &format!("unix://{}", self.socket.display())])
            .env("HOME", &self.home)
            .env("NIX_CONF_DIR", &self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        Ok(status.success())
    }
}

/// A network, mount and cgroup namespace holding the listener; the cgroup
/// namespace is rooted at a cgroup of the test's own, so the publisher's
/// cgroup (system.slice/…) is made there, not in the host's system.slice.
struct Namespace {
    holder: Child,
    /// The Python interpreter itself (a version manager's shim would add
    /// its start-up to every attempt).
    python: String,
    /// The test's cgroup as the host sees it: the namespace's /sys/fs/cgroup.
    cgroup: PathBuf,
}

impl Namespace {
    fn start(cgroup2: &Path, addresses: &[String], python: &str) -> Result<Self> {
        let cgroup = cgroup2.join(format!("clawdinator-imds-{}", std::process::id()));
        if cgroup.exists() {
            remove_cgroup_tree(&cgroup)?;
        }
        std::fs::create_dir(&cgroup).with_context(|| format!("cannot make the test's cgroup {}", cgroup.display()))?;
        let spawned = command("sh")
            .args(["-c", ENTER_CGROUP])
            .arg(&cgroup)
            .args([
                "unshare",
                "--net",
                "--mount",
                "--cgroup",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                SETUP,
                "sh",
            ])
            .args([&addresses[0], &addresses[1], SOURCE_V4, SOURCE_V6, LISTENER, python])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let holder = match spawned {
            Ok(child) => child,
            Err(err) => {
                let _ = remove_cgroup_tree(&cgroup);
                return Err(err).context("cannot start the namespace");
            }
        };
        let mut ns = Namespace { holder, python: python.to_string(), cgroup };
        let mut line = String::new();
        let stdout = ns.holder.stdout.take().context("no stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = ns.holder.kill();
            let mut stderr = String::new();
            if let Some(mut err) = ns.holder.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            bail!("the namespace did not come up (network, mount and cgroup namespaces, cgroup2, addresses on lo):\n{stderr}");
        }
        Ok(ns)
    }

    /// Run argv inside the namespaces, as root, in `cgroup` (relative to
    /// the namespace's cgroup root; "" is the root).
    fn run(&self, cgroup: &str, argv: &[&str]) -> Result<Output> {
        let pid = self.holder.id().to_string();
        command("sh")
            .args(["-c", ENTER_CGROUP])
            .arg(self.cgroup.join(cgroup))
            .args(["nsenter", "--target", &pid, "--net", "--mount", "--cgroup", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .context("cannot run in the namespace")
    }

    /// A shell script as root in `cgroup`; `flags` for bash ("-e" as the
    /// firewall's script runs). Err with its output when it fails.
    fn script(&self, cgroup: &str, flags: &str, text: &str) -> Result<()> {
        let mut argv = vec!["bash"];
        if !flags.is_empty() {
            argv.push(flags);
        }
        argv.extend(["-c", text]);
        let out = self.run(cgroup, &argv)?;
        ensure!(
            out.status.success(),
            "exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Whether each of `uids`, in `cgroup`, connects to port 80 of each of
    /// `addresses`: (uid, address, connected).
    fn reaches(&self, cgroup: &str, uids: &[u32], addresses: &[String]) -> Result<Vec<(u32, String, bool)>> {
        let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
        let joined = addresses.join(",");
        let mut argv = vec![self.python.as_str(), "-c", CONNECT, SOURCE_V4, SOURCE_V6, joined.as_str()];
        argv.extend(uids.iter().map(String::as_str));
        let out = self.run(cgroup, &argv)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "the connection attempts failed ({}):\n{stderr}", out.status);
        let mut seen = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            match line.split(' ').collect::<Vec<_>>()[..] {
                [uid, address, "connected"] => seen.push((uid.parse()?, address.to_string(), true)),
                [uid, address, "refused"] => seen.push((uid.parse()?, address.to_string(), false)),
                _ => bail!("a connection attempt neither connected nor was refused: {line}\n{stderr}"),
            }
        }
        ensure!(seen.len() == uids.len() * addresses.len(), "connection attempts are missing:\n{stderr}");
        Ok(seen)
    }

    fn make_cgroup(&self, cgroup: &str) -> Result<()> {
        std::fs::create_dir_all(self.cgroup.join(cgroup)).with_context(|| format!("cannot make the cgroup {cgroup}"))
    }

    fn remove_cgroup(&self, cgroup: &str) -> Result<()> {
        remove_cgroup_tree(&self.cgroup.join(cgroup))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if let Err(err) = remove_cgroup_tree(&self.cgroup) {
            eprintln!("warning: {err:#}");
        }
    }
}

/// rmdir a cgroup and the ones below it, deepest first (a cgroup is
/// removable once its processes are gone, which can take a moment).
fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err).with_context(|| format!("cannot remove the cgroup {}", dir.display())),
        }
    }
}

/// Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or
/// /sys/fs/cgroup/unified beside v1 controllers).
fn cgroup2_mount() -> Result<Option<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    Ok(mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
    }))
}

/// The PATH, then root's sbin directories (which a user's PATH may lack).
fn search_path() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from)).collect()
}

/// A command whose children find what `find` found.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    if let Ok(path) = std::env::join_paths(search_path()) {
        command.env("PATH", path);
    }
    command
}

/// A program on the search path.
fn find(program: &str) -> Option<PathBuf> {
    search_path().into_iter().map(|dir| dir.join(program)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        candidate.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}
