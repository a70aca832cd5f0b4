//! The closures path with a real nix (Debian's nix-bin, as `.ci/run`
//! installs it; root builds and copies): `release build` of a small fleet
//! flake (two hosts whose systems share a chain of three paths) signs and
//! copies the closures to a binary cache in the emulator's S3, writes the
//! manifest once, and sends nothing the second time; `host switch` then
//! realises a system into a store of its own exactly as on a host, with
//! only the fleet's key trusted, and refuses what the fleet's key did not
//! sign, a NAR changed after signing, and a path the cache lacks, leaving
//! the running system as it was.
//!
//! nix's http store sends no SigV4, so the test cache bucket has a policy
//! that lets anyone GetObject in it (and the emulator takes nix's unsigned
//! PUTs); production uses an `s3://` store with the instance role and CI's
//! role, as infra/opentofu/aws/cache.tf grants.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use testkit::env::{env, Env};

use super::switch::{Host, OLD};

const CACHE: &str = "fleet-cache";

const FLAKE: &str = r#"{
  outputs = { self }:
    let
      sh = args: derivation ({ system = "x86_64-linux"; builder = "/bin/sh"; } // args);
      base = sh { name = "clawdinator-test-base"; args = [ "-c" "echo base > $out" ]; };
      lib = sh { name = "clawdinator-test-lib"; args = [ "-c" "echo ${base} > $out" ]; };
      system = name: sh {
        name = "nixos-system-${name}-test";
        args = [ "-c" ''
          /bin/mkdir -p $out/bin
          echo ${lib} > $out/lib
          printf '#!/bin/sh\necho "switch-to-configuration $1 %s" >> "$LOG"\n[ "$1" = test ] && ln -sfn %s "$CURRENT"\nexit 0\n' $out $out > $out/bin/switch-to-configuration
          /bin/chmod +x $out/bin/switch-to-configuration
        '' ];
      };
      host = name: { inherit name; value.config.system.build.toplevel = system name; };
    in
    { nixosConfigurations = builtins.listToAttrs (map host [ "clawdinator-1" "clawdinator-2" ]); };
}
"#;

/// Systems outside the fleet's flake, for the refusals (one per attack).
const OTHERS: &str = r#"{ tag }: derivation {
  name = "nixos-system-clawdinator-1-${tag}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin; printf '#!/bin/sh\nln -sfn %s \"$CURRENT\"\n' $out > $out/bin/switch-to-configuration; /bin/chmod +x $out/bin/switch-to-configuration" ];
}
"#;

fn sh() -> xshell::Shell {
    xshell::Shell::new().unwrap()
}

fn require_nix() {
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    let nix = {
        let sh = sh();
        xshell::cmd!(sh, "nix-store --version").quiet().ignore_stderr().read().is_ok()
    };
    assert!(
        nix && root,
        "this test needs nix and root (as CI runs it): `apt-get install nix-bin`, as .ci/run does; nix {nix}, root {root}"
    );
}

/// A key pair: (secret file 0600, public key text).
fn key_pair(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let (secret, public) = (dir.join(format!("{name}.sec")), dir.join(format!("{name}.pub")));
    let sh = sh();
    xshell::cmd!(sh, "nix-store --generate-binary-cache-key {name} {secret} {public}").quiet().run().unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    (secret, std::fs::read_to_string(public).unwrap().trim().to_string())
}

/// The fleet's repository: the small flake, its lock, a registry of two.
fn fleet_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("nix")).unwrap();
    std::fs::write(dir.join("flake.nix"), FLAKE).unwrap();
    std::fs::write(dir.join("flake.lock"), r#"{"nodes":{"root":{}},"root":"root","version":7}"#).unwrap();
    testkit::fixtures::write_registry(&dir.join("nix/instances.json"), 2).unwrap();
    let sh = sh();
    sh.change_dir(dir);
    xshell::cmd!(sh, "git init -q -b main").run().unwrap();
    xshell::cmd!(sh, "git add -A").run().unwrap();
    xshell::cmd!(sh, "git -c user.name=t -c user.email=t@t commit -q -m fleet").run().unwrap();
    xshell::cmd!(sh, "git rev-parse HEAD").read().unwrap()
}

async fn cache_bucket(env: &Env) {
    env.aws.s3().create_bucket().bucket(CACHE).send().await.unwrap();
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Sid": "NixReadsUnsigned", "Effect": "Allow",
        "Principal": "*", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{CACHE}/*")}]});
    env.aws.s3().put_bucket_policy().bucket(CACHE).policy(policy.to_string()).send().await.unwrap();
}

fn cache_url(env: &Env) -> String {
    format!("{}/{CACHE}", env.emulator.endpoint())
}

fn release_build(env: &Env, repo: &Path, rev: &str, key: &Path) -> Output {
    env.cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["--json", "release", "build", "--rev", rev, "--bucket", &env.bucket, "--cache", &cache_url(env)])
        .arg("--flake")
        .arg(repo)
        .arg("--cache-key-file")
        .arg(key)
        .arg("--instances")
        .arg(repo.join("nix/instances.json"))
        // No network here: nix asks no upstream cache for the test's paths.
        .env("NIX_CONFIG", "substituters =")
        .output()
        .unwrap()
}

/// `host switch SYSTEM` into the host's own store, trusting only `public`.
fn host_switch(env: &Env, host: &Host, system: &str, public: &str) -> Output {
    let mut cli = testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator"));
    cli.env(
        "NIX_CONFIG",
        format!("substituters = {}\ntrusted-public-keys = {public}\nrequire-sigs = true\n", cache_url(env)),
    );
    host.run(cli, &["switch", system], "")
}

/// PutObjects to the cache since the call log started whose key contains `part`.
fn cache_puts(env: &Env, part: &str) -> usize {
    let calls = env.emulator.calls().unwrap();
    let to_cache = |c: &&Value| c["path"].as_str().unwrap_or("").starts_with(&format!("/{CACHE}/"));
    calls
        .iter()
        .filter(to_cache)
        .filter(|c| c["operation"] == "PutObject" && c["path"].as_str().unwrap().contains(part))
        .count()
}

async fn cache_object(env: &Env, key: &str) -> Vec<u8> {
    let out = env.aws.s3().get_object().bucket(CACHE).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

fn store_hash(path: &str) -> &str {
    &path["/nix/store/".len()..][..32]
}

fn build_other(tag: &str, dir: &Path) -> String {
    let file = dir.join("others.nix");
    std::fs::write(&file, OTHERS).unwrap();
    let sh = sh();
    let built = xshell::cmd!(sh, "nix-build --no-out-link {file} --argstr tag {tag} --option substituters ''")
        .quiet()
        .read()
        .unwrap();
    built
}

/// Copy a path to the cache, its NAR uncompressed (so a byte of it can be changed).
fn push(env: &Env, path: &str, key: Option<&Path>) {
    let to = match key {
        Some(k) => format!("{}?compression=none&secret-key={}", cache_url(env), k.display()),
        None => format!("{}?compression=none", cache_url(env)),
    };
    let sh = sh();
    xshell::cmd!(sh, "nix --extra-experimental-features nix-command copy --to {to} {path}").quiet().run().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ci_builds_signs_and_caches_once_and_a_host_takes_only_what_the_fleet_key_signed() {
    require_nix();
    let env = env().await;
    cache_bucket(&env).await;
    let repo = env.path("fleet");
    let rev = fleet_repo(&repo);
    let (secret, public) = key_pair(env.dir.path(), "test-fleet-1");

    // Build once: both hosts' systems, signed into the cache, one manifest.
    env.emulator.start_call_log().unwrap();
    let out = release_build(&env, &repo, &rev, &secret);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["written"], "created", "{report}");
    let system = report["hosts"]["clawdinator-1"].as_str().unwrap().to_string();
    assert!(system.ends_with("-nixos-system-clawdinator-1-test"), "{report}");
    let narinfo = String::from_utf8(cache_object(&env, &format!("{}.narinfo", store_hash(&system))).await).unwrap();
    assert!(narinfo.contains("Sig: test-fleet-1:"), "{narinfo}");
    let manifest: Value = serde_json::from_slice(&env.get(&format!("releases/{rev}.json")).await).unwrap();
    assert_eq!(manifest["hosts"], report["hosts"]);
    let log = std::fs::read_to_string(env.path("audit.jsonl")).unwrap();
    let finished: Value = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["command"] == "release build" && r["phase"] == "finished")
        .unwrap_or_else(|| panic!("no finished release build record in {log}"));
    assert_eq!(finished["resources"], serde_json::json!([report["manifest"]]), "{finished}");
    let stored =
        env.aws.s3().head_object().bucket(&env.bucket).key(format!("releases/{rev}.json")).send().await.unwrap();

    // Four paths (base, lib, two systems): a NAR and a narinfo each, seen by the call log.
    assert_eq!(cache_puts(&env, ".narinfo"), 4);

    // Again: nix finds every path in the cache and sends none; the manifest stays.
    env.emulator.start_call_log().unwrap();
    let again = release_build(&env, &repo, &rev, &secret);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&again.stdout).unwrap()["written"], "kept");
    assert_eq!(cache_puts(&env, "/"), 0, "a path the cache had was sent again");
    let kept = env.aws.s3().head_object().bucket(&env.bucket).key(format!("releases/{rev}.json")).send().await.unwrap();
    assert_eq!(kept.e_tag(), stored.e_tag(), "the manifest was rewritten");

    // A host fetches its system (the whole closure) and switches to it.
    let host = Host::with(false);
    let out = host_switch(&env, &host, &system, &public);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(host.link("current-system"), system);
    let lib = std::fs::read_to_string(host.on_disk(&system).join("lib")).unwrap();
    assert!(host.on_disk(lib.trim()).exists(), "the closure did not come along");
    assert!(host.calls().contains(&format!("switch-to-configuration test {system}")), "{}", host.calls());

    refusals(&env, &host, &system, &public).await;
}

/// Each leaves the running system as it was and records nothing new.
async fn refusals(env: &Env, host: &Host, running: &str, public: &str) {
    let (other_key, _) = key_pair(env.dir.path(), "someone-else-1");
    let (fleet_key, _) = (env.dir.path().join("test-fleet-1.sec"), ());
    let signed_by_other = build_other("other-key", env.dir.path());
    push(env, &signed_by_other, Some(&other_key));
    let unsigned = build_other("unsigned", env.dir.path());
    push(env, &unsigned, None);
    let tampered = build_other("tampered", env.dir.path());
    push(env, &tampered, Some(&fleet_key));
    let info = String::from_utf8(cache_object(env, &format!("{}.narinfo", store_hash(&tampered))).await).unwrap();
    let nar = info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_string();
    let mut bytes = cache_object(env, &nar).await;
    // One byte of the activation script's text: the NAR stays well-formed, its hash does not.
    let at = bytes.windows(7).position(|w| w == b"ln -sfn").expect("the script in the NAR");
    bytes[at] = b'm';
    env.aws.s3().put_object().bucket(CACHE).key(&nar).body(bytes.into()).send().await.unwrap();
    let absent = build_other("absent", env.dir.path());
    let before = host.record();
    for (what, system, nix_says) in [
        ("signed by another key", &signed_by_other, "is not signed by any of the keys in 'trusted-public-keys'"),
        ("unsigned", &unsigned, "is not signed by any of the keys in 'trusted-public-keys'"),
        ("changed after signing", &tampered, "hash mismatch"),
        ("not in the cache", &absent, "don't know how to build"),
    ] {
        let out = host_switch(env, host, system, public);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains("nothing changed") && stderr.contains(nix_says), "{what}: {stderr}");
        assert_eq!(host.link("current-system"), running, "{what}: the running system changed");
        // nix may leave the unpacked bytes, but never registers them: not a valid path.
        let (root, sh) = (host.p("root"), sh());
        let valid =
            xshell::cmd!(sh, "nix-store --store {root} --check-validity {system}").quiet().ignore_stderr().run();
        assert!(valid.is_err(), "{what}: the path is valid in the host's store");
        assert_eq!(host.record(), before, "{what}: recorded");
    }
    assert_ne!(running, OLD);
}

/// The copy breaks off after the first NAR: no manifest is written (a host
/// could not fetch what it names), and the re-run sends only the paths
/// the cache does not have yet, then writes the manifest.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_copy_breaks_off_writes_no_manifest_and_a_rerun_sends_only_the_rest() {
    require_nix();
    let env = env().await;
    cache_bucket(&env).await;
    let repo = env.path("fleet");
    let rev = fleet_repo(&repo);
    let (secret, _) = key_pair(env.dir.path(), "test-fleet-1");
    let fault = serde_json::json!([{"operation": "PutObject", "match": format!("/{CACHE}/nar/"), "after": 1,
        "times": -1, "status": 500, "code": "InternalError", "message": "We encountered an internal error."}]);
    env.emulator.inject(fault).unwrap();
    let out = release_build(&env, &repo, &rev, &secret);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nix copy to"), "{stderr}");
    assert!(!env.keys().await.iter().any(|k| k.starts_with("releases/")), "a manifest named closures the cache lacks");
    let listed = env.aws.s3().list_objects_v2().bucket(CACHE).send().await.unwrap();
    let valid = listed.contents().iter().filter(|o| o.key().unwrap_or("").ends_with(".narinfo")).count();
    assert!(valid < 4, "the copy did not break off");

    env.emulator.clear_faults().unwrap();
    env.emulator.start_call_log().unwrap();
    let again = release_build(&env, &repo, &rev, &secret);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&again.stdout).unwrap()["written"], "created");
    assert_eq!(cache_puts(&env, ".narinfo"), 4 - valid, "a path the cache had was sent again");
}
