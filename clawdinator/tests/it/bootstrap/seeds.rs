//! `seeds prepare` against local git repositories made by the test.

use std::path::Path;

use clawdinator::bootstrap::seeds::{self, PrepareOptions};
use clawdinator::output::Output;
use testkit::fixtures::{commit_all, git_repo};

fn head(dir: &Path) -> String {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn opts(root: &Path, list: &str) -> PrepareOptions {
    std::fs::write(root.join("repos.tsv"), list).unwrap();
    PrepareOptions {
        list: root.join("repos.tsv"),
        dest: root.join("seeds"),
        jobs: 2,
        allow_partial: false,
        github_token: None,
        git_timeout: std::time::Duration::from_secs(60),
    }
}

const OUT: Output = Output { json: true };

#[test]
fn prepare_clones_with_and_without_branch_and_rerun_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let alpha = git_repo(&root.join("up/alpha"), &[("README.md", "alpha\n")], "main").unwrap();
    let beta = git_repo(&root.join("up/beta"), &[("a.txt", "on main\n")], "main").unwrap();
    // A second branch in beta with different content.
    let sh = xshell::Shell::new().unwrap();
    sh.change_dir(root.join("up/beta"));
    xshell::cmd!(sh, "git checkout --quiet -b release").quiet().run().unwrap();
    std::fs::write(root.join("up/beta/a.txt"), "on release\n").unwrap();
    commit_all(&root.join("up/beta"), "release").unwrap();
    xshell::cmd!(sh, "git checkout --quiet main").quiet().run().unwrap();

    let list = format!("# comment\n\nalpha\t{alpha}\nbeta\t{beta}\trelease\n");
    let o = opts(root, &list);
    let report = seeds::prepare(&o, &OUT).unwrap();
    assert_eq!((report.cloned, report.updated, report.failed.len()), (2, 0, 0));
    assert_eq!(std::fs::read_to_string(o.dest.join("beta/a.txt")).unwrap(), "on release\n");
    // Shallow.
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(o.dest.join("alpha"))
        .args(["rev-list", "--count", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let records = seeds::load_records(&o.dest).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].commit, head(&root.join("up/alpha")));
    assert_eq!(records[1].branch.as_deref(), Some("release"));

    // A new upstream commit: the re-run fetches and resets instead of cloning.
    std::fs::write(root.join("up/alpha/README.md"), "alpha v2\n").unwrap();
    commit_all(&root.join("up/alpha"), "v2").unwrap();
    let report = seeds::prepare(&o, &OUT).unwrap();
    assert_eq!((report.cloned, report.updated), (0, 2));
    assert_eq!(std::fs::read_to_string(o.dest.join("alpha/README.md")).unwrap(), "alpha v2\n");
    assert_eq!(seeds::load_records(&o.dest).unwrap()[0].commit, head(&root.join("up/alpha")));
}

#[test]
fn a_wrong_origin_is_corrected_and_unlisted_clones_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let one = git_repo(&root.join("up/one"), &[("f", "one\n")], "main").unwrap();
    let two = git_repo(&root.join("up/two"), &[("f", "two\n")], "main").unwrap();
    let o = opts(root, &format!("repo\t{one}\nextra\t{two}\n"));
    seeds::prepare(&o, &OUT).unwrap();

    let o = opts(root, &format!("repo\t{two}\n"));
    let report = seeds::prepare(&o, &OUT).unwrap();
    assert_eq!(report.removed, ["extra"]);
    assert!(!o.dest.join("extra").exists());
    assert_eq!(std::fs::read_to_string(o.dest.join("repo/f")).unwrap(), "two\n");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(o.dest.join("repo"))
        .args(["remote", "get-url", "origin"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), two);
}

#[test]
fn a_failed_repo_fails_the_command_unless_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let good = git_repo(&root.join("up/good"), &[("f", "x\n")], "main").unwrap();
    let list = format!("good\t{good}\nbad\tfile://{}/nowhere\n", root.display());
    let o = opts(root, &list);
    let report = seeds::prepare(&o, &OUT).unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].name, "bad");
    assert!(!o.dest.join("SEEDS.json").exists(), "SEEDS.json written despite a failure");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["bootstrap", "seeds", "prepare", "--list"])
        .arg(&o.list)
        .arg("--dest")
        .arg(&o.dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 repo(s) failed: bad"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let partial = PrepareOptions { allow_partial: true, ..o };
    seeds::prepare(&partial, &OUT).unwrap();
    let records = seeds::load_records(&partial.dest).unwrap();
    assert_eq!(records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["good"]);
}

#[test]
fn malformed_lists_are_refused_with_line_numbers_before_cloning() {
    let p = Path::new("repos.tsv");
    let err = seeds::parse_list(p, "a\tfile:///x\nb file:///y\na\tfile:///z\nc\n.hidden\tfile:///h\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("repos.tsv:2: expected `name<TAB>url[<TAB>branch]`"), "{err}");
    assert!(err.contains("repos.tsv:3: duplicate name \"a\" (first on line 1)"), "{err}");
    assert!(err.contains("repos.tsv:4:"), "{err}");
    assert!(err.contains("repos.tsv:5: repository name"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let o = opts(tmp.path(), "x\tfile:///x\nx\tfile:///y\n");
    assert!(seeds::prepare(&o, &OUT).is_err());
    assert!(!o.dest.exists(), "cloned or created something despite a bad list");
}

#[test]
fn the_shipped_list_parses() {
    let path = testkit::repo_root().join("clawdinator/repos.tsv");
    let repos = seeds::load_list(&path).unwrap();
    assert!(!repos.is_empty(), "the shipped list names no repository");
    // Hosts clone anonymously over HTTPS from the fleet's organisation: no
    // other host, no scheme that could carry credentials or run commands.
    for repo in &repos {
        assert!(repo.url.starts_with("https://github.com/openclaw/"), "{}: {}", repo.name, repo.url);
        // Seeds are named as the repository, as GitHub compares names (any case).
        let last = repo.url.trim_end_matches(".git").rsplit('/').next().unwrap_or_default();
        assert!(last.eq_ignore_ascii_case(&repo.name), "{}: {}", repo.name, repo.url);
    }
}

/// A server that accepts and never answers: the clone is killed at the
/// limit and the failure names the repository.
#[test]
fn a_stalled_server_fails_the_repository_within_the_limit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Held open, never answered; the thread ends with the test process.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(8) {
            held.push(stream);
        }
        std::thread::sleep(std::time::Duration::from_secs(120));
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), &format!("stalled\thttp://127.0.0.1:{port}/repo.git\n"));
    o.git_timeout = std::time::Duration::from_secs(2);
    let report = seeds::prepare(&o, &OUT).unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].name, "stalled");
    assert!(report.failed[0].error.contains("stalled"), "{}", report.failed[0].error);
}

fn write_records(seeds: &Path, names: &[&str]) {
    let records: Vec<serde_json::Value> = names
        .iter()
        .map(
            |n| serde_json::json!({"name": n, "url": format!("file:///{n}"), "branch": null, "commit": "0".repeat(40)}),
        )
        .collect();
    std::fs::write(seeds.join("SEEDS.json"), serde_json::to_vec(&records).unwrap()).unwrap();
}

/// Host side: missing clones are copied in; an agent's clone, edited since,
/// is never touched; a clone the seeds no longer list stays.
#[test]
fn install_copies_only_missing_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let seeds_dir = dir.path().join("repo-seeds");
    for (name, file) in [("alpha", "README.md"), ("beta", "src/lib.rs"), ("gamma", "x")] {
        std::fs::create_dir_all(seeds_dir.join(name).join(Path::new(file).parent().unwrap())).unwrap();
        std::fs::write(seeds_dir.join(name).join(file), format!("{name} seed\n")).unwrap();
    }
    write_records(&seeds_dir, &["alpha"]);
    let dest = dir.path().join("repos");
    let owner = clawdinator::atomic::Owner::default();
    let first = seeds::install(&seeds_dir, &dest, &[], owner).unwrap();
    assert_eq!((first.installed.as_slice(), first.kept.len()), (&["alpha".to_string()][..], 0));
    assert_eq!(std::fs::read_to_string(dest.join("alpha/README.md")).unwrap(), "alpha seed\n");

    // The agent works in its clone; a new seed appears; an interrupted run left debris.
    std::fs::write(dest.join("alpha/README.md"), "work in progress\n").unwrap();
    std::fs::create_dir_all(dest.join(".seeding-interrupted/junk")).unwrap();
    write_records(&seeds_dir, &["alpha", "beta", "gamma"]);
    let second = seeds::install(&seeds_dir, &dest, &[], owner).unwrap();
    assert_eq!(second.installed, ["beta", "gamma"]);
    assert_eq!(second.kept, ["alpha"]);
    assert_eq!(std::fs::read_to_string(dest.join("alpha/README.md")).unwrap(), "work in progress\n");
    assert_eq!(std::fs::read_to_string(dest.join("beta/src/lib.rs")).unwrap(), "beta seed\n");
    assert!(!dest.join("gamma/junk").exists() && !dest.join(".seeding-interrupted").exists());

    write_records(&seeds_dir, &["beta"]);
    let third = seeds::install(&seeds_dir, &dest, &[], owner).unwrap();
    assert!(third.installed.is_empty() && third.kept == ["beta"]);
    assert!(dest.join("alpha/README.md").exists(), "an unlisted clone was removed");

    // Root's deploy copy takes one seed; one the bundle lacks is an error that says so.
    let deploy = dir.path().join("deploy");
    let only = seeds::install(&seeds_dir, &deploy, &["beta".into()], owner).unwrap();
    assert_eq!(only.installed, ["beta"]);
    assert_eq!(std::fs::read_dir(&deploy).unwrap().count(), 1);
    let err = seeds::install(&seeds_dir, &deploy, &["clawdinators".into()], owner).unwrap_err();
    assert!(format!("{err}").contains("no seed \"clawdinators\""), "{err}");
}

/// The agents' user in these tests: nobody, when the test runs as root.
const AGENT: u32 = 65534;

fn as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Everything under `dir`, links not followed: name, type, mode, owner, content.
fn snapshot(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() { std::fs::read_to_string(&path).unwrap_or_default() } else { String::new() };
        seen.push(format!("{} {:o} {}:{} {content:?}", path.display(), meta.mode(), meta.uid(), meta.gid()));
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    seen.sort();
    seen
}

/// Seeds of three repositories, a few hundred files deep enough that a copy
/// takes long enough to be raced.
fn big_seeds(seeds_dir: &Path) {
    for name in ["alpha", "beta", "gamma"] {
        for d in 0..10 {
            let dir = seeds_dir.join(name).join(format!("d{d}/sub"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..10 {
                std::fs::write(dir.join(format!("f{f}")), format!("{name} {d} {f}\n")).unwrap();
            }
        }
    }
    write_records(seeds_dir, &["alpha", "beta", "gamma"]);
}

/// A home for the agent (its own, as on a host: /var/lib/clawd/repos).
fn agent_home(root: &Path, n: usize) -> std::path::PathBuf {
    let home = root.join(format!("home-{n}"));
    std::fs::create_dir_all(home.join("repos")).unwrap();
    if as_root() {
        for dir in [home.clone(), home.join("repos")] {
            std::os::unix::fs::chown(&dir, Some(AGENT), Some(AGENT)).unwrap();
        }
    }
    home
}

/// The agent, as a thread holding the agents' uid (per-thread credentials,
/// no capabilities): in a loop, every hidden directory in `repos` (a copy
/// being staged) is moved aside and replaced by a link to `outside`; with
/// `swap_repos`, `repos` itself too. Returns how many swaps it made.
fn agent_swapper(
    home: std::path::PathBuf,
    outside: std::path::PathBuf,
    swap_repos: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let started = std::sync::Arc::new(std::sync::Barrier::new(2));
    let ready = started.clone();
    let handle = std::thread::spawn(move || {
        if as_root() {
            use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
            let (uid, gid) = (rustix::fs::Uid::from_raw(AGENT), rustix::fs::Gid::from_raw(AGENT));
            set_thread_groups(&[]).unwrap();
            set_thread_res_gid(gid, gid, gid).unwrap();
            set_thread_res_uid(uid, uid, uid).unwrap();
        }
        ready.wait();
        let (repos, mut swaps, mut n) = (home.join("repos"), 0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for entry in std::fs::read_dir(&repos).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_dir = std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir());
                if !name.starts_with('.') || name.starts_with(".moved-") || !is_dir {
                    continue;
                }
                n += 1;
                if std::fs::rename(entry.path(), repos.join(format!(".moved-{n}"))).is_ok()
                    && std::os::unix::fs::symlink(&outside, entry.path()).is_ok()
                {
                    swaps += 1;
                }
            }
            if swap_repos && std::fs::rename(&repos, home.join(format!("repos-moved-{n}"))).is_ok() {
                n += 1;
                swaps += usize::from(std::os::unix::fs::symlink(&outside, &repos).is_ok());
            }
        }
        swaps
    });
    started.wait();
    handle
}

/// Attack: while root copies the seeds into the agents' directory, the
/// agent swaps the copy's staging directory, or its `repos` directory, for a
/// link to a root-owned directory, again and again. The copy never writes,
/// creates or chowns anything there; every install that succeeds is whole
/// and the agent's.
#[test]
fn install_never_follows_a_link_the_agent_swaps_in() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let seeds_dir = root.join("repo-seeds");
    big_seeds(&seeds_dir);
    // Root's, like /etc: the place every link points at.
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("passwd"), "root:x:0:0\n").unwrap();
    let before = snapshot(&outside);
    let owner = if as_root() {
        clawdinator::atomic::Owner { uid: Some(AGENT), gid: Some(AGENT) }
    } else {
        eprintln!("not root: the agent is this user; files are not handed to another owner");
        clawdinator::atomic::Owner::default()
    };

    // `repos` already a link: refused, naming it.
    let home = agent_home(root, 0);
    std::fs::rename(home.join("repos"), home.join("repos-real")).unwrap();
    std::os::unix::fs::symlink(&outside, home.join("repos")).unwrap();
    let err = seeds::install(&seeds_dir, &home.join("repos"), &[], owner).unwrap_err();
    assert!(format!("{err:#}").contains("a link is never followed"), "{err:#}");
    assert_eq!(snapshot(&outside), before, "the copy went through the link");

    // The staging directory swapped mid-copy: nothing is written through a
    // link; an install the agent disturbs may fail (the agent only delays
    // its own seeds, and says so), and one that succeeds is whole.
    let (mut swaps, mut whole) = (0, 0);
    for n in 1..=200 {
        let home = agent_home(root, n);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = agent_swapper(home.clone(), outside.clone(), false, stop.clone());
        let result = seeds::install(&seeds_dir, &home.join("repos"), &[], owner);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swaps += swapper.join().unwrap();
        assert_eq!(snapshot(&outside), before, "round {n}: the copy wrote through the agent's link");
        let report = match result {
            Ok(report) => report,
            Err(err) => {
                let text = format!("{err:#}");
                assert!(text.contains(".seeding-") || text.contains("link"), "round {n}: {text}");
                continue;
            }
        };
        whole += 1;
        assert_eq!(report.installed, ["alpha", "beta", "gamma"], "round {n}");
        for name in ["alpha", "beta", "gamma"] {
            let file = home.join("repos").join(name).join("d9/sub/f9");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{name} 9 9\n"), "round {n}");
            if as_root() {
                assert_eq!(std::fs::symlink_metadata(&file).unwrap().uid(), AGENT, "round {n}");
            }
        }
        if swaps >= 5 {
            break;
        }
    }
    assert!(swaps > 0, "the agent never caught a copy being staged: the race was not run");
    assert!(whole > 0, "no install finished whole while the agent played");

    // `repos` itself swapped while installing: an install may fail; nothing outside changes.
    for n in 201..=220 {
        let home = agent_home(root, n);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = agent_swapper(home.clone(), outside.clone(), true, stop.clone());
        let _ = seeds::install(&seeds_dir, &home.join("repos"), &[], owner);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(snapshot(&outside), before, "round {n}: the copy wrote through the agent's link");
    }
}
