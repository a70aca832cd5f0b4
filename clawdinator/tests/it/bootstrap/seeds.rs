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
    let names: Vec<_> = repos.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["openclaw", "nix-openclaw", "clawdinators", "clawhub", "nix-steipete-tools", "clawkeeper"]);
    assert!(repos.iter().all(|r| r.url.starts_with("https://github.com/openclaw/")));
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
    std::fs::create_dir_all(dest.join(".gamma.seeding/junk")).unwrap();
    write_records(&seeds_dir, &["alpha", "beta", "gamma"]);
    let second = seeds::install(&seeds_dir, &dest, &[], owner).unwrap();
    assert_eq!(second.installed, ["beta", "gamma"]);
    assert_eq!(second.kept, ["alpha"]);
    assert_eq!(std::fs::read_to_string(dest.join("alpha/README.md")).unwrap(), "work in progress\n");
    assert_eq!(std::fs::read_to_string(dest.join("beta/src/lib.rs")).unwrap(), "beta seed\n");
    assert!(!dest.join("gamma/junk").exists() && !dest.join(".gamma.seeding").exists());

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
