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
    let Some(nixpkgs_lib) = crate::checks::nix_module::nixpkgs_lib() else {
        return Ok(Tested::Skipped("no nixpkgs lib to evaluate the module with (NIXPKGS_LIB)".into()));
    };
    if find("nix-instantiate").is_none() {
        return Ok(Tested::Skipped("nix-instantiate is not installed (apt-get install nix-bin)".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Tested::Skipped(
            "it needs root (network, mount and cgroup namespaces, iptables, connections as other uids): run as root, as .ci/run does".into(),
        ));
    }
    let mut tools = std::collections::BTreeMap::new();
    for program in PROGRAMS {
        match find(program) {
            Some(path) => tools.insert(program, path),
            None => {
                return Ok(Tested::Skipped(format!(
                    "{program} is not installed (iptables-nft and iptables-legacy: apt-get install iptables, as .ci/run does; nix-daemon: nix-bin; unshare, nsenter: util-linux; ip: iproute2)"
                )))
            }
        };
    }
    let Some(cgroup2) = cgroup2_mount()? else {
        return Ok(Tested::Skipped(
            "no cgroup2 hierarchy is mounted (the publisher is let through by its cgroup)".into(),
        ));
    };

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

    let out = command(&tools["python3"]).args(["-c", "import sys; print(sys.executable)"]).output()?;
    ensure!(out.status.success(), "python3 does not run: {}", String::from_utf8_lossy(&out.stderr));
    let python = String::from_utf8(out.stdout)?.trim().to_string();

    let mut done = Vec::new();
    for backend in ["nft", "legacy"] {
        let tool = |family: &str| tools[format!("{family}-{backend}").as_str()].display().to_string();
        let functions =
            format!("iptables() {{ {} \"$@\"; }}\nip6tables() {{ {} \"$@\"; }}\n", tool("iptables"), tool("ip6tables"));
        firewall(&meta, &cgroup2, &python, &functions, [tool("iptables"), tool("ip6tables")])
            .with_context(|| format!("with iptables-{backend}"))?;
        done.push(format!("iptables-{backend}"));
    }
    let daemon = nix_daemon(&meta, &python, &tools)?;
    Ok(Tested::Passed(format!(
        "metadata service (IPv4, IPv6; {}): root and the running publisher's cgroup reach it; the agents' uid, a nixbld uid and the publisher's own uid outside its cgroup are refused; reloads keep one copy of each rule and drop a gone cgroup's; a refill that breaks off leaves it refused; the publisher's stop takes its rule back; {daemon}",
        done.join(", ")
    )))
}

/// The firewall scenario with one backend; `functions` define `iptables`
/// and `ip6tables`, `listing` are the backend's two programs.
fn firewall(meta: &Metadata, cgroup2: &Path, python: &str, functions: &str, listing: [String; 2]) -> Result<()> {
    let ns = Namespace::start(cgroup2, &meta.addresses, python)?;
    let publisher = meta.cgroup.as_str();
    let some = |addresses: &[String], uids: &[u32], cgroup: &str, want: bool, when: &str| -> Result<()> {
        for (uid, address, reached) in ns.reaches(cgroup, uids, addresses)? {
            let place = if cgroup.is_empty() { String::new() } else { format!(" in {cgroup}") };
            ensure!(
                reached == want,
                "{when}: uid {uid}{place} {} {address}",
                if reached { "reaches" } else { "is refused" }
            );
        }
        Ok(())
    };
    let all = |uids: &[u32], cgroup: &str, want: bool, when: &str| some(&meta.addresses, uids, cgroup, want, when);
    let rules = || -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for program in &listing {
            for chain in ["OUTPUT", meta.chain.as_str()] {
                let out = ns.run("", &[program.as_str(), "-w", "-S", chain])?;
                ensure!(out.status.success(), "{program} -S {chain}: {}", String::from_utf8_lossy(&out.stderr));
                lines.extend(String::from_utf8_lossy(&out.stdout).lines().map(|l| format!("{program} {l}")));
            }
        }
        Ok(lines)
    };
    let count = |lines: &[String], what: &str| lines.iter().filter(|l| l.contains(what)).count();
    let firewall = format!("{functions}{}", meta.firewall);

    all(&[ROOT, AGENTS, BUILDER, DYNAMIC], "", true, "without the rules (the listener answers everyone)")?;

    ns.script("", "-e", &firewall).context("the firewall's commands")?;
    all(&[ROOT], "", true, "after the firewall starts")?;
    all(&[AGENTS, BUILDER, DYNAMIC], "", false, "after the firewall starts")?;
    let first = rules()?;
    ensure!(
        count(&first, &format!("-j {}", meta.chain)) == 2,
        "one jump to the chain per family expected:\n{}",
        first.join("\n")
    );
    ensure!(count(&first, "-hold") == 0, "the hold is left in OUTPUT:\n{}", first.join("\n"));
    ensure!(
        count(&first, "-m cgroup") == 0,
        "a cgroup is let through with no publisher running:\n{}",
        first.join("\n")
    );

    ns.script("", "-e", &firewall).context("the firewall's commands, again (a reload)")?;
    ensure!(
        rules()? == first,
        "a reload changed the rules:\nbefore\n{}\nafter\n{}",
        first.join("\n"),
        rules()?.join("\n")
    );

    // A refill that breaks off after the flush (here: IPv4's root rule
    // fails, and the script stops there) leaves that address refused to
    // all, root too, until a start completes; IPv6's chain is untouched.
    let root_rule = "-m owner --uid-owner 0 -j RETURN";
    let broken =
        format!("{functions}{}", meta.firewall.replacen(root_rule, &format!("{root_rule} --no-such-option"), 1));
    ensure!(broken != firewall, "the firewall's commands no longer let root through by --uid-owner 0");
    ensure!(ns.script("", "-e", &broken).is_err(), "the broken refill did not fail");
    let (v4, v6) = (&meta.addresses[..1], &meta.addresses[1..]);
    some(v4, &[ROOT, AGENTS, BUILDER], "", false, "after IPv4's refill broke off")?;
    some(v6, &[ROOT], "", true, "after IPv4's refill broke off")?;
    some(v6, &[AGENTS, BUILDER], "", false, "after IPv4's refill broke off")?;
    ns.script("", "-e", &firewall).context("the firewall's commands after a broken refill")?;
    ensure!(rules()? == first, "a start after a broken refill left other rules:\n{}", rules()?.join("\n"));

    // The publisher starts: systemd makes its cgroup, root runs ExecStartPre
    // from inside it (twice: a second copy must not pile up).
    ns.make_cgroup(publisher)?;
    for _ in 0..2 {
        ns.script(publisher, "", &format!("{functions}{}", meta.allow)).context("the publisher's ExecStartPre")?;
    }
    let running = rules()?;
    ensure!(count(&running, "-m cgroup") == 2, "one cgroup rule per family expected:\n{}", running.join("\n"));
    all(&[DYNAMIC, AGENTS], publisher, true, "while the publisher runs")?;
    all(&[ROOT], "", true, "while the publisher runs")?;
    all(&[AGENTS, BUILDER, DYNAMIC], "", false, "while the publisher runs, outside its cgroup")?;

    // A firewall reload while it runs keeps it let through, once.
    ns.script("", "-e", &firewall).context("the firewall's commands while the publisher runs")?;
    let reloaded = rules()?;
    ensure!(
        count(&reloaded, "-m cgroup") == 2,
        "after a reload, one cgroup rule per family expected:\n{}",
        reloaded.join("\n")
    );
    all(&[DYNAMIC], publisher, true, "after a reload while the publisher runs")?;
    all(&[AGENTS, BUILDER], "", false, "after a reload while the publisher runs")?;

    // It stops: ExecStopPost from inside its cgroup, then systemd removes it.
    ns.script(publisher, "", &format!("{functions}{}", meta.revoke)).context("the publisher's ExecStopPost")?;
    all(&[DYNAMIC], publisher, false, "after the publisher stops")?;
    ensure!(rules()? == first, "the publisher's stop left rules behind:\n{}", rules()?.join("\n"));
    ns.remove_cgroup(publisher)?;

    // The next run, with a reload between its stop and its cgroup's
    // removal: the reload re-adds the rule, which then names a gone cgroup.
    // The next reload drops it (and iptables-legacy, which refuses every
    // change while it is there, takes changes again); the run after that
    // is let through by its new cgroup.
    ns.make_cgroup(publisher)?;
    ns.script(publisher, "", &format!("{functions}{}", meta.allow))
        .context("the publisher's ExecStartPre, second run")?;
    ns.script(publisher, "", &format!("{functions}{}", meta.revoke))
        .context("the publisher's ExecStopPost, second run")?;
    ns.script("", "-e", &firewall).context("the firewall's commands as the publisher stops")?;
    ns.remove_cgroup(publisher)?;
    ns.script("", "-e", &firewall).context("the firewall's commands with a rule for a gone cgroup")?;
    ensure!(rules()? == first, "a reload left the rule of a gone cgroup:\n{}", rules()?.join("\n"));
    all(&[AGENTS, BUILDER, DYNAMIC], "", false, "after a reload dropped a gone cgroup's rule")?;
    ns.make_cgroup(publisher)?;
    ns.script(publisher, "", &format!("{functions}{}", meta.allow))
        .context("the publisher's ExecStartPre, third run")?;
    all(&[DYNAMIC], publisher, true, "while the publisher runs again")?;
    ns.script(publisher, "", &format!("{functions}{}", meta.revoke))
        .context("the publisher's ExecStopPost, third run")?;
    all(&[DYNAMIC], publisher, false, "after the publisher stops again")?;
    ns.remove_cgroup(publisher)?;

    // Later starts and stops of the firewall: nothing for a gone cgroup,
    // and a stop leaves the refusal in place.
    ns.script("", "-e", &firewall).context("the firewall's commands after the publisher stopped")?;
    ensure!(rules()? == first, "a reload after the publisher stopped changed the rules:\n{}", rules()?.join("\n"));
    ns.script("", "-e", &format!("{functions}{}", meta.firewall_stop)).context("the firewall's stop commands")?;
    all(&[AGENTS, BUILDER], "", false, "after the firewall stops")?;
    all(&[ROOT], "", true, "after the firewall stops")?;
    Ok(())
}

/// The nix daemon with the evaluated users: root is served, the agents'
/// stand-in is refused; with NixOS's default (`*`) it would be served.
fn nix_daemon(meta: &Metadata, python: &str, tools: &std::collections::BTreeMap<&str, PathBuf>) -> Result<String> {
    let dir = tempfile::tempdir()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let home = dir.path().join("home");
    std::fs::create_dir(&home)?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777))?;
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf)?;
    let socket = dir.path().join("socket");
    let store = format!("unix://{}", socket.display());

    let serve = |allowed: &[String]| -> Result<(bool, bool, String)> {
        std::fs::write(
            conf.join("nix.conf"),
            format!(
                "allowed-users = {}\ntrusted-users = {}\nbuild-users-group =\nexperimental-features = nix-command\n",
                allowed.join(" "),
                meta.trusted_users.join(" ")
            ),
        )?;
        let _ = std::fs::remove_file(&socket);
        let log = dir.path().join("daemon.log");
        let mut daemon = command(&tools["nix-daemon"])
            .arg("--store")
            .arg(dir.path().join("store"))
            .env("NIX_CONF_DIR", &conf)
            .env("NIX_DAEMON_SOCKET_PATH", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start nix-daemon")?;
        let result = (|| {
            let start = Instant::now();
            while !socket.exists() {
                ensure!(daemon.try_wait()?.is_none(), "nix-daemon exited: {}", std::fs::read_to_string(&log)?);
                ensure!(start.elapsed() < Duration::from_secs(20), "nix-daemon made no socket in 20 s");
                std::thread::sleep(Duration::from_millis(50));
            }
            let ping = |uid: u32| -> Result<bool> {
                let status = command(python)
                    .args(["-c", AS_USER, &uid.to_string()])
                    .arg(&tools["nix"])
                    .args(["store", "ping", "--store", &store])
                    .env("HOME", &home)
                    .env("NIX_CONF_DIR", &conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?;
                Ok(status.success())
            };
            Ok((ping(ROOT)?, ping(AGENTS)?, std::fs::read_to_string(&log)?))
        })();
        let _ = daemon.kill();
        let _ = daemon.wait();
        result
    };

    let (root, agents, log) = serve(&meta.allowed_users)?;
    ensure!(root, "with allowed-users = {:?}, root is not served by the nix daemon:\n{log}", meta.allowed_users);
    ensure!(!agents, "with allowed-users = {:?}, uid {AGENTS} is served by the nix daemon", meta.allowed_users);
    ensure!(
        log.contains("is not allowed to connect to the Nix daemon"),
        "the nix daemon did not say why it refused uid {AGENTS}:\n{log}"
    );
    let (_, open, log) = serve(&["*".to_string()])?;
    if !open {
        bail!("with NixOS's default allowed-users = *, uid {AGENTS} is not served either: the test cannot tell the settings apart\n{log}");
    }
    Ok(format!(
        "the nix daemon (allowed-users = {}, trusted-users = {}) serves root and refuses uid {AGENTS}, which NixOS's default (*) would serve",
        meta.allowed_users.join(" "),
        meta.trusted_users.join(" ")
    ))
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
