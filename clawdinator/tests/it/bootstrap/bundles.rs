//! Bootstrap bundles against the emulator: upload, fetch, isolation,
//! idempotence, and every refusal leaving the host's state untouched.

use std::path::Path;

use clawdinator::bootstrap::{self, Action, FetchOptions, UploadOptions};
use clawdinator::output::Output;
use testkit::env::{archive_entries, canary_value, env, snapshot, Env};
use testkit::fixtures::{self, SampleFleet};

fn upload_opts(fleet: &SampleFleet, bucket: &str) -> UploadOptions {
    UploadOptions {
        sources: fleet.sources.clone(),
        seeds_dir: fleet.seeds_dir.clone(),
        bucket: bucket.to_string(),
        instances: vec![],
        dry_run: false,
        concurrency: 8,
        source_revision: Some("abc123".into()),
    }
}

fn fetch_opts(env: &Env, n: usize) -> FetchOptions {
    FetchOptions {
        bucket: env.bucket.clone(),
        prefix: format!("bootstrap/clawdinator-{n}"),
        prefix_file: Some(env.path("host/etc/clawdinator/bootstrap-prefix")),
        secrets_dir: env.path("host/var/lib/clawd/nix-secrets"),
        seeds_dir: env.path("host/var/lib/clawd/repo-seeds"),
        age_key_path: env.path("host/etc/agenix/keys/clawdinator.agekey"),
        state_dir: env.path("host/var/lib/clawd/bootstrap"),
    }
}

const QUIET: Output = Output { json: true };

async fn manifest_of(env: &Env, n: usize) -> bootstrap::Manifest {
    serde_json::from_slice(&env.get(&format!("bootstrap/clawdinator-{n}/manifest.json")).await).unwrap()
}

fn identity_secret(n: usize) -> String {
    format!("clawdinator/clawdinator-{n}/age-identity")
}

/// An instance's identity as Secrets Manager holds it (the version given, else the current one).
async fn identity_value(env: &Env, n: usize, version: Option<&str>) -> String {
    let sm = env.aws.secrets_manager();
    let out = sm.get_secret_value().secret_id(identity_secret(n)).set_version_id(version.map(str::to_string));
    out.send().await.unwrap().secret_string().unwrap().to_string()
}

/// Every identity secret there is, by name, with its tags and versions.
async fn identity_secrets(env: &Env) -> std::collections::BTreeMap<String, (Vec<(String, String)>, usize)> {
    let out = env.aws.secrets_manager().list_secrets().send().await.unwrap();
    let mut found = std::collections::BTreeMap::new();
    for s in out.secret_list() {
        let name = s.name().unwrap().to_string();
        if name.ends_with("/age-identity") {
            let tags = s.tags().iter().map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()));
            found.insert(name, (tags.collect(), s.secret_versions_to_stages().map_or(0, |v| v.len())));
        }
    }
    found
}

/// The AWS operations of the shim's call log (in order), for one service.
fn operations(env: &Env, service: &str) -> Vec<String> {
    let calls = env.emulator.calls().unwrap();
    calls.iter().filter(|c| c["service"] == service).map(|c| c["operation"].as_str().unwrap().to_string()).collect()
}

/// A secret's value, opened with the identity in `identity_file`.
fn open_with(identity_file: &Path, sealed: &Path) -> anyhow::Result<Vec<u8>> {
    let identities = clawdinator::secrets::load_identities(identity_file)?;
    let bytes = std::fs::read(sealed)?;
    Ok(clawdinator::secrets::decrypt(sealed, &bytes, &identities, identity_file)?.to_vec())
}

async fn fleet(env: &Env, count: usize) -> SampleFleet {
    fixtures::sample_fleet(&env.path("src"), count, canary_value).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_upload_then_fetch() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    let report = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!((report.uploaded, report.copied, report.unchanged), (5, 1, 0), "{report}");
    assert_eq!(
        env.keys().await,
        [
            "bootstrap/clawdinator-1/manifest.json",
            "bootstrap/clawdinator-1/repo-seeds.tar.zst",
            "bootstrap/clawdinator-1/secrets.tar.zst",
            "bootstrap/clawdinator-2/manifest.json",
            "bootstrap/clawdinator-2/repo-seeds.tar.zst",
            "bootstrap/clawdinator-2/secrets.tar.zst",
        ]
    );

    let opts = fetch_opts(&env, 2);
    let fetched = bootstrap::fetch(&env.aws, &opts).await.unwrap();
    assert!(!fetched.already_done && !fetched.reinitialised);

    // Secrets: exactly the common ones and this instance's token, owner-only,
    // re-encrypted to the bundle's own identity: the same values, other bytes.
    let secrets = snapshot(&opts.secrets_dir);
    let spec = clawdinator::secrets::Spec::load(&fleet.sources.spec).unwrap();
    let mut want: Vec<String> = spec.common.iter().map(|n| format!("{n}.age")).collect();
    want.push("clawdinator-discord-token-2.age".into());
    want.extend([".bootstrap-ok".to_string(), ".bootstrap-prefix".to_string()]);
    want.sort();
    assert_eq!(secrets.keys().cloned().collect::<Vec<_>>(), want);
    for (name, (mode, content)) in &secrets {
        if name.ends_with(".age") {
            assert_eq!(*mode, 0o400, "{name}");
            let source = fleet.sources.secrets_dir.join(name);
            assert_ne!(content.as_deref().unwrap(), std::fs::read(&source).unwrap(), "{name}: the fleet's ciphertext");
            let value = open_with(&opts.age_key_path, &opts.secrets_dir.join(name)).unwrap();
            assert_eq!(value, open_with(&fleet.sources.age_key, &source).unwrap(), "{name}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(opts.secrets_dir.join(".bootstrap-prefix")).unwrap().trim(),
        "bootstrap/clawdinator-2"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&opts.secrets_dir), 0o700);
    // The three paths are links into the generation in force.
    for path in [&opts.secrets_dir, &opts.seeds_dir, &opts.age_key_path] {
        let target = std::fs::read_link(path).unwrap();
        assert!(target.starts_with(opts.state_dir.join("current")), "{}", target.display());
    }
    assert_eq!(std::fs::read_dir(opts.state_dir.join("generations")).unwrap().count(), 1);

    // The instance's own identity, mode 0400; never the fleet's: exactly the
    // Secrets Manager version the manifest names.
    assert_ne!(std::fs::read(&opts.age_key_path).unwrap(), std::fs::read(&fleet.sources.age_key).unwrap());
    assert_eq!(mode(&opts.age_key_path), 0o400);
    let manifest = manifest_of(&env, 2).await;
    let stored = identity_value(&env, 2, manifest.identity_version.as_deref()).await;
    assert_eq!(std::fs::read_to_string(&opts.age_key_path).unwrap().trim(), stored.trim());
    assert_eq!(fetched.identity_version, manifest.identity_version);

    // Seeds: the same tree, modes normalised.
    let got = snapshot(&opts.seeds_dir);
    let src = snapshot(&fleet.seeds_dir);
    assert_eq!(got.keys().collect::<Vec<_>>(), src.keys().collect::<Vec<_>>());
    for (name, (mode, content)) in &got {
        assert_eq!(content, &src[name].1, "{name}");
        assert_eq!(*mode, if content.is_some() { 0o644 } else { 0o755 }, "{name}");
    }
    assert_eq!(fetched.seeds, ["sample"]);

    // No staging debris left beside the targets.
    for dir in [opts.secrets_dir.parent().unwrap(), opts.age_key_path.parent().unwrap()] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left behind: {name}");
        }
    }

    // A second fetch does nothing.
    let again = bootstrap::fetch(&env.aws, &opts).await.unwrap();
    assert!(again.already_done);
}

/// Attack: a compromised host has its own bundle (and the instance role
/// that fetched it). Its identity opens its own secrets and nothing of
/// another instance's bundle, not even the secrets both share.
#[tokio::test(flavor = "multi_thread")]
async fn one_bundle_opens_nothing_of_another() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let (a, b) = (fetch_opts(&env, 1), {
        let mut b = fetch_opts(&env, 2);
        for p in [&mut b.secrets_dir, &mut b.seeds_dir, &mut b.age_key_path, &mut b.state_dir] {
            *p = env.path("other").join(p.file_name().unwrap());
        }
        b.prefix_file = None;
        b
    });
    bootstrap::fetch(&env.aws, &a).await.unwrap();
    bootstrap::fetch(&env.aws, &b).await.unwrap();
    assert_ne!(std::fs::read(&a.age_key_path).unwrap(), std::fs::read(&b.age_key_path).unwrap());
    let mut shared = 0;
    for entry in std::fs::read_dir(&b.secrets_dir).unwrap() {
        let sealed = entry.unwrap().path();
        if sealed.extension().is_some_and(|e| e == "age") {
            let err = open_with(&a.age_key_path, &sealed).unwrap_err();
            assert!(format!("{err:#}").contains("cannot decrypt"), "{err:#}");
            assert!(open_with(&b.age_key_path, &sealed).is_ok());
            shared += usize::from(a.secrets_dir.join(sealed.file_name().unwrap()).exists());
        }
    }
    assert_eq!(shared, 5, "the common secrets were not in both bundles");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bundle_holds_only_its_own_token() {
    let env = env().await;
    let fleet = fleet(&env, 5).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    for n in 1..=5 {
        let bytes = env.get(&format!("bootstrap/clawdinator-{n}/secrets.tar.zst")).await;
        let entries = archive_entries(&bytes);
        let tokens: Vec<_> = entries.iter().filter(|e| e.contains("discord-token")).cloned().collect();
        assert_eq!(tokens, [format!("secrets/clawdinator-discord-token-{n}.age")]);
        assert!(entries.iter().all(|e| e.starts_with("secrets/")), "{entries:?}");
        assert_eq!(entries.len(), 1 + 5 + 1, "{entries:?}");
        let manifest: bootstrap::Manifest =
            serde_json::from_slice(&env.get(&format!("bootstrap/clawdinator-{n}/manifest.json")).await).unwrap();
        assert_eq!(manifest.secrets.iter().filter(|s| s.contains("discord-token")).count(), 1);
        assert_eq!(manifest.archives["secrets.tar.zst"].sha256, clawdinator::digest::sha256_hex(&bytes));
        assert_eq!(manifest.source_revision.as_deref(), Some("abc123"));
    }
    // The seeds archive was sent once and copied to the other prefixes.
    let first = env.get("bootstrap/clawdinator-1/repo-seeds.tar.zst").await;
    for n in 2..=5 {
        assert_eq!(env.get(&format!("bootstrap/clawdinator-{n}/repo-seeds.tar.zst")).await, first);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seeds_are_sent_once_and_copied() {
    let env = env().await;
    let fleet = fleet(&env, 3).await;
    env.emulator.start_recording().unwrap();
    let report = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let seeds: Vec<_> =
        report.objects.iter().filter(|o| o.key.ends_with("repo-seeds.tar.zst")).map(|o| o.action).collect();
    assert_eq!(seeds, [Action::Create, Action::Copy, Action::Copy]);
    // On the wire: exactly one PUT of a seeds archive carrying a body; the others are copies.
    let requests = env.emulator.recorded_requests().unwrap();
    let seed_puts: Vec<_> = requests
        .iter()
        .filter(|r| r["method"] == "PUT" && r["url"].as_str().unwrap_or_default().contains("repo-seeds.tar.zst"))
        .collect();
    assert_eq!(seed_puts.len(), 3, "{seed_puts:#?}");
    let copies =
        seed_puts.iter().filter(|r| r["headers"].to_string().to_lowercase().contains("x-amz-copy-source")).count();
    assert_eq!(copies, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_upload_sends_nothing() {
    let env = env().await;
    let fleet = fleet(&env, 3).await;
    let mut opts = upload_opts(&fleet, &env.bucket);
    bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    let manifest_before = env.get("bootstrap/clawdinator-1/manifest.json").await;
    opts.source_revision = Some("a-later-commit".into());
    let again = bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    assert_eq!((again.uploaded, again.copied, again.unchanged, again.bytes_sent), (0, 0, 9, 0), "{again}");
    assert_eq!(env.get("bootstrap/clawdinator-1/manifest.json").await, manifest_before);
}

/// A re-run with nothing changed asks S3 one listing and each manifest,
/// nothing per archive (no HeadObject, no write), whatever the fleet's size.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_reads_one_listing_and_the_manifests_only() {
    let env = env().await;
    let fleet = fleet(&env, 5).await;
    let opts = upload_opts(&fleet, &env.bucket);
    bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    env.emulator.start_call_log().unwrap();
    let again = bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    assert_eq!((again.bytes_sent, again.unchanged), (0, 15), "{again}");
    let mut s3 = operations(&env, "s3");
    s3.sort();
    assert_eq!(s3, ["GetObject"; 5].into_iter().chain(["ListObjects"]).collect::<Vec<_>>());
}

/// The listing stands in for a request per archive only where it agrees
/// with the manifest: an archive written after its manifest (by a hand, a
/// second or more later: S3 lists times to the second) is asked about,
/// found changed and sent again, even at the same size; its neighbours
/// stay unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn an_archive_rewritten_after_its_manifest_is_sent_again() {
    let env = env().await;
    let fleet = fleet(&env, 3).await;
    let opts = upload_opts(&fleet, &env.bucket);
    bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    let key = "bootstrap/clawdinator-2/repo-seeds.tar.zst";
    let size = env.get(key).await.len();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    env.put(key, vec![0u8; size]).await;
    let again = bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    let changed: Vec<_> =
        again.objects.iter().filter(|o| o.action != Action::Unchanged).map(|o| (o.key.as_str(), o.action)).collect();
    assert_eq!(changed, [(key, Action::Copy)], "{again}");
    let fetched = bootstrap::fetch(&env.aws, &fetch_opts(&env, 2)).await.unwrap();
    assert_eq!(fetched.seeds, ["sample"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_a_secret_reuploads_only_the_bundles_holding_it() {
    let env = env().await;
    let fleet = fleet(&env, 4).await;
    let opts = upload_opts(&fleet, &env.bucket);
    bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();

    fixtures::write_secret(&fleet.sources.secrets_dir, "clawdinator-discord-token-3", b"rotated", &fleet.recipient)
        .unwrap();
    let report = bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    let changed: Vec<_> =
        report.objects.iter().filter(|o| o.action != Action::Unchanged).map(|o| o.key.as_str()).collect();
    assert_eq!(changed, ["bootstrap/clawdinator-3/secrets.tar.zst", "bootstrap/clawdinator-3/manifest.json"]);
    assert!(report.objects.iter().all(|o| o.action != Action::Create));

    // A common secret is in every bundle: every secrets archive and manifest, never the seeds.
    fixtures::write_secret(
        &fleet.sources.secrets_dir,
        "clawdinator-openai-api-key-peter-2",
        b"rotated",
        &fleet.recipient,
    )
    .unwrap();
    let report = bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    assert_eq!((report.uploaded, report.copied, report.unchanged), (8, 0, 4), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    let mut opts = upload_opts(&fleet, &env.bucket);
    opts.dry_run = true;
    let plan = bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    assert!(env.keys().await.is_empty());
    assert_eq!(plan.objects.iter().filter(|o| o.action == Action::Create).count(), 5);
    assert!(plan.bytes_sent > 0);
    // It says which identities it would create, and creates none.
    assert_eq!((plan.identities_created, plan.identities_rotated, plan.identities_kept), (2, 0, 0));
    assert!(plan.to_string().contains("would create   identity clawdinator/clawdinator-1/age-identity"), "{plan}");
    assert!(identity_secrets(&env).await.is_empty(), "a dry run created an identity");

    opts.dry_run = false;
    bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    let before = env.get("bootstrap/clawdinator-1/secrets.tar.zst").await;
    fixtures::write_secret(&fleet.sources.secrets_dir, "clawdinator-discord-token-1", b"new", &fleet.recipient)
        .unwrap();
    opts.dry_run = true;
    let rotating = bootstrap::upload_rotating(&env.aws, &opts, true, &QUIET).await.unwrap();
    assert_eq!((rotating.identities_rotated, rotating.identities_kept), (2, 0), "{rotating}");
    let plan = bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    assert_eq!(identity_secrets(&env).await.values().map(|(_, versions)| *versions).collect::<Vec<_>>(), [1, 1]);
    let replaced: Vec<_> =
        plan.objects.iter().filter(|o| o.action == Action::Replace).map(|o| o.key.as_str()).collect();
    assert_eq!(replaced, ["bootstrap/clawdinator-1/secrets.tar.zst", "bootstrap/clawdinator-1/manifest.json"]);
    assert_eq!(env.get("bootstrap/clawdinator-1/secrets.tar.zst").await, before, "dry run replaced an object");
}

/// Fetch instance 1, then break instance 2's bundle with `sabotage` and
/// fetch it: refused, and the host's state is exactly as before.
async fn refused_with_state_untouched(sabotage: impl AsyncFnOnce(&Env), expect: &str) {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    bootstrap::fetch(&env.aws, &fetch_opts(&env, 1)).await.unwrap();
    let before = snapshot(&env.path("host"));
    sabotage(&env).await;
    let err = bootstrap::fetch(&env.aws, &fetch_opts(&env, 2)).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(expect), "{text}");
    assert_eq!(snapshot(&env.path("host")), before, "state changed by a refused fetch");
    assert!(!env.dir.path().join("evil").exists() && !Path::new("/tmp/clawdinator-evil").exists());
}

/// Attack: the agent owns a directory above the bootstrap state (it could
/// rename it and plant links root then follows).
#[tokio::test(flavor = "multi_thread")]
async fn a_state_under_a_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = env().await;
    let fleet = fleet(&env, 1).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let lib = env.path("host/var/lib/clawd");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = bootstrap::fetch(&env.aws, &fetch_opts(&env, 1)).await.unwrap_err();
    assert!(format!("{err:#}").contains("root only runs what root owns"), "{err:#}");
    assert_eq!(std::fs::read_dir(&lib).unwrap().count(), 0, "the fetch wrote under a directory others can write");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_archive_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| {
            let mut bytes = env.get("bootstrap/clawdinator-2/secrets.tar.zst").await;
            let last = bytes.len() - 10;
            bytes[last] ^= 0xff;
            env.put("bootstrap/clawdinator-2/secrets.tar.zst", bytes).await;
        },
        "does not match its manifest",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_mismatch_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| {
            let key = "bootstrap/clawdinator-2/manifest.json";
            let mut manifest: bootstrap::Manifest = serde_json::from_slice(&env.get(key).await).unwrap();
            manifest.archives.get_mut("repo-seeds.tar.zst").unwrap().size += 1;
            env.put(key, serde_json::to_vec(&manifest).unwrap()).await;
        },
        "does not match its manifest",
    )
    .await;
}

/// A tar.zst with one raw entry, path and type as given (bypassing the tar
/// crate's own path checks, as an attacker would).
fn hostile_archive(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_old();
    let name = &mut header.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    if let Some(target) = link {
        header.set_link_name(target).unwrap();
    }
    let data = b"owned\n";
    header.set_size(if link.is_some() { 0 } else { data.len() as u64 });
    header.set_cksum();
    if link.is_some() {
        builder.append(&header, std::io::empty()).unwrap();
    } else {
        builder.append(&header, &data[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    zstd::encode_all(tar.as_slice(), 3).unwrap()
}

async fn replace_secrets_archive(env: &Env, bytes: Vec<u8>) {
    let key = "bootstrap/clawdinator-2/manifest.json";
    let mut manifest: bootstrap::Manifest = serde_json::from_slice(&env.get(key).await).unwrap();
    let info = manifest.archives.get_mut("secrets.tar.zst").unwrap();
    info.sha256 = clawdinator::digest::sha256_hex(&bytes);
    info.size = bytes.len() as u64;
    env.put("bootstrap/clawdinator-2/secrets.tar.zst", bytes).await;
    env.put(key, serde_json::to_vec(&manifest).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dot_dot_entry_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| {
            replace_secrets_archive(env, hostile_archive("../../../evil", tar::EntryType::Regular, None)).await
        },
        "contains `..`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_entry_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| {
            replace_secrets_archive(env, hostile_archive("/tmp/clawdinator-evil", tar::EntryType::Regular, None)).await
        },
        "absolute path",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_entry_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| {
            replace_secrets_archive(env, hostile_archive("secrets", tar::EntryType::Symlink, Some("/etc"))).await
        },
        "not a plain file or directory",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_change_reinitialises() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let opts = fetch_opts(&env, 1);
    bootstrap::fetch(&env.aws, &opts).await.unwrap();
    assert!(opts.secrets_dir.join("clawdinator-discord-token-1.age").exists());

    // The override file names another prefix: the old state is replaced whole.
    let prefix_file = opts.prefix_file.clone().unwrap();
    std::fs::create_dir_all(prefix_file.parent().unwrap()).unwrap();
    std::fs::write(&prefix_file, "bootstrap/clawdinator-2\n").unwrap();
    let report = bootstrap::fetch(&env.aws, &opts).await.unwrap();
    assert!(report.reinitialised && !report.already_done, "{report:?}");
    assert!(!opts.secrets_dir.join("clawdinator-discord-token-1.age").exists());
    assert!(opts.secrets_dir.join("clawdinator-discord-token-2.age").exists());
    assert_eq!(
        std::fs::read_to_string(opts.secrets_dir.join(".bootstrap-prefix")).unwrap().trim(),
        "bootstrap/clawdinator-2"
    );
}

async fn fails_before_upload(break_it: impl FnOnce(&SampleFleet), expect: &str) {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    break_it(&fleet);
    let err = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(expect), "{text}");
    assert!(!text.contains(testkit::env::CANARY), "{text}");
    assert!(env.keys().await.is_empty(), "something was uploaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_token_fails_before_upload() {
    fails_before_upload(
        |f| std::fs::remove_file(f.sources.secrets_dir.join("clawdinator-discord-token-2.age")).unwrap(),
        "missing: the Discord token of instance `clawdinator-2`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_identity_fails_before_upload() {
    fails_before_upload(|f| std::fs::remove_file(&f.sources.age_key).unwrap(), "cannot read the age identity").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecryptable_secret_fails_before_upload() {
    fails_before_upload(
        |f| {
            let other = f.sources.age_key.with_file_name("other.agekey");
            let stranger = fixtures::write_identity(&other).unwrap();
            fixtures::write_secret(&f.sources.secrets_dir, "clawdinator-anthropic-api-key", b"x", &stranger).unwrap();
        },
        "cannot decrypt",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_secret_fails_before_upload() {
    fails_before_upload(
        |f| {
            std::fs::write(f.sources.secrets_dir.join("clawdinator-openai-api-key-peter-2.age"), "plain text, not age")
                .unwrap()
        },
        "not a well-formed age file",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unprepared_seeds_fail_before_upload() {
    fails_before_upload(|f| std::fs::remove_file(f.seeds_dir.join("SEEDS.json")).unwrap(), "seeds prepare").await;
}

type Tree = std::collections::BTreeMap<String, (u32, Option<Vec<u8>>)>;

/// What the host sees through its three paths: secrets, seeds, identity.
fn host_view(opts: &FetchOptions) -> Vec<Tree> {
    let key = std::fs::read(&opts.age_key_path).ok();
    vec![snapshot(&opts.secrets_dir), snapshot(&opts.seeds_dir), [("key".to_string(), (0, key))].into()]
}

/// `program bootstrap fetch` against the emulator, installing where `opts` says.
fn fetch_cli(env: &Env, program: &str, opts: &FetchOptions) -> std::process::Command {
    let mut command = env.cli(program);
    command.args(["bootstrap", "fetch"]);
    for (flag, path) in [
        ("--secrets-dir", &opts.secrets_dir),
        ("--repo-seeds-dir", &opts.seeds_dir),
        ("--age-key-path", &opts.age_key_path),
        ("--state-dir", &opts.state_dir),
    ] {
        command.arg(flag).arg(path);
    }
    command
}

/// The CLI's bootstrap fetch against the emulator, killed (abort) after `step`.
fn fetch_cli_killed_at(env: &Env, opts: &FetchOptions, step: &str) -> std::process::Output {
    fetch_cli(env, env!("CARGO_BIN_EXE_clawdinator"), opts)
        .args(["--bucket", &env.bucket])
        .arg("--prefix-file")
        .arg(opts.prefix_file.as_ref().unwrap())
        .env("CLAWDINATOR_TEST_ABORT_AT", step)
        .output()
        .unwrap()
}

/// A fetch killed between any two of its steps leaves the host's previous
/// state whole (or, once the switch is done, the new one whole); the next
/// run finishes the work and leaves one generation.
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_killed_between_steps_leaves_a_whole_state() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let opts = fetch_opts(&env, 1);
    bootstrap::fetch(&env.aws, &opts).await.unwrap();
    let old = host_view(&opts);
    let prefix_file = opts.prefix_file.clone().unwrap();
    std::fs::create_dir_all(prefix_file.parent().unwrap()).unwrap();
    std::fs::write(&prefix_file, "bootstrap/clawdinator-2\n").unwrap();
    for step in ["downloaded", "unpacked", "staged"] {
        let out = fetch_cli_killed_at(&env, &opts, step);
        assert!(!out.status.success(), "{step}: the fetch was not killed");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("ABORT_AT={step}")), "{out:?}");
        assert!(host_view(&opts) == old, "killed after {step}: the previous state is not whole");
    }
    let out = fetch_cli_killed_at(&env, &opts, "switched");
    assert!(!out.status.success());
    let new = host_view(&opts);
    assert!(
        new[0].contains_key("clawdinator-discord-token-2.age")
            && !new[0].contains_key("clawdinator-discord-token-1.age")
    );
    assert_eq!(
        std::fs::read_to_string(opts.secrets_dir.join(".bootstrap-prefix")).unwrap().trim(),
        "bootstrap/clawdinator-2"
    );

    let again = bootstrap::fetch(&env.aws, &opts).await.unwrap();
    assert!(again.already_done);
    assert!(host_view(&opts) == new);
    assert_eq!(std::fs::read_dir(opts.state_dir.join("generations")).unwrap().count(), 1, "leftovers stayed");
}

/// The abort switch above is a test hook: this build has it, and the host
/// binary's build (the crate without its dev-dependencies, as
/// nix/package.nix builds it) resolves the crate without the feature, so
/// the shipped binary carries neither the switch nor its name.
#[test]
fn the_abort_switch_is_only_in_the_tests_build() {
    const { assert!(cfg!(feature = "test-hooks"), "the tests run without the hooks they use") };
    let features = |edges: &str| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .current_dir(testkit::repo_root())
            .args(["tree", "--offline", "--locked", "-p", "clawdinator", "--depth", "0", "-f", "[{f}]", "-e", edges])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().lines().next().unwrap_or_default().to_string()
    };
    let shipped = features("normal,build");
    assert!(shipped.starts_with('[') && !shipped.contains("test-hooks"), "the host binary's build: {shipped}");
    assert!(features("all").contains("test-hooks"), "the tests' build has no test-hooks");
}

async fn edit_manifest(env: &Env, n: usize, change: impl FnOnce(&mut bootstrap::Manifest)) {
    let key = format!("bootstrap/clawdinator-{n}/manifest.json");
    let mut manifest: bootstrap::Manifest = serde_json::from_slice(&env.get(&key).await).unwrap();
    change(&mut manifest);
    env.put(&key, serde_json::to_vec(&manifest).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_stops_at_the_manifests_size() {
    refused_with_state_untouched(
        async |env: &Env| edit_manifest(env, 2, |m| m.archives.get_mut("secrets.tar.zst").unwrap().size -= 1).await,
        "is larger than the",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unpacking_stops_at_the_manifests_bytes() {
    refused_with_state_untouched(
        async |env: &Env| {
            edit_manifest(env, 2, |m| m.archives.get_mut("repo-seeds.tar.zst").unwrap().unpacked_bytes -= 1).await
        },
        "unpacks to more than the",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unpacking_stops_at_the_manifests_entries() {
    refused_with_state_untouched(
        async |env: &Env| edit_manifest(env, 2, |m| m.archives.get_mut("secrets.tar.zst").unwrap().entries -= 1).await,
        "entries its manifest lists",
    )
    .await;
}

/// A re-run whose seeds have the recorded fingerprint reuses the recorded
/// archive without reading a file: an edit that keeps size and mtime goes
/// unseen (only compressing would see it), while a real change (git rewrites
/// the mtime) is archived and sent.
#[tokio::test(flavor = "multi_thread")]
async fn unchanged_seeds_are_not_archived_again() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let readme = fleet.seeds_dir.join("sample/README.md");
    let mtime = std::fs::metadata(&readme).unwrap().modified().unwrap();
    let len = std::fs::metadata(&readme).unwrap().len() as usize;
    std::fs::write(&readme, "x".repeat(len)).unwrap();
    std::fs::File::options().write(true).open(&readme).unwrap().set_modified(mtime).unwrap();
    let again = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!((again.bytes_sent, again.unchanged), (0, 6), "{again}");

    std::fs::write(&readme, "# changed\n").unwrap();
    let changed = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let seeds: Vec<_> =
        changed.objects.iter().filter(|o| o.key.ends_with("repo-seeds.tar.zst")).map(|o| o.action).collect();
    assert_eq!(seeds, [Action::Replace, Action::Copy], "{changed}");
    let archive = env.get("bootstrap/clawdinator-2/repo-seeds.tar.zst").await;
    let mut tar = tar::Archive::new(zstd::Decoder::new(archive.as_slice()).unwrap());
    let mut found = String::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("sample/README.md") {
            std::io::Read::read_to_string(&mut entry, &mut found).unwrap();
        }
    }
    assert_eq!(found, "# changed\n");
}

/// An upload that fails midway (every attempt of one seeds copy fails):
/// the instance whose copy failed gets no manifest, so no host installs a
/// half bundle; the re-run sends only what is missing and finishes.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_fails_midway_then_a_rerun_finishes_it() {
    let env = env().await;
    let fleet = fleet(&env, 3).await;
    env.emulator
        .inject(serde_json::json!({"operation": "CopyObject", "match": "clawdinator-3/repo-seeds", "times": 3}))
        .unwrap();
    let err = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("S3 CopyObject"), "{text}");
    // The identity no manifest names is removed and the error says so; the
    // ones whose bundles were finished stay (their manifests name them).
    assert!(
        text.contains(&format!("no manifest names: {}", identity_secret(3)))
            && text.contains(&format!("{} (its manifest names it)", identity_secret(1))),
        "{text}"
    );
    assert_eq!(
        identity_secrets(&env).await.keys().cloned().collect::<Vec<_>>(),
        [identity_secret(1), identity_secret(2)]
    );
    let keys = env.keys().await;
    assert!(!keys.contains(&"bootstrap/clawdinator-3/manifest.json".to_string()), "{keys:?}");
    assert!(!keys.contains(&"bootstrap/clawdinator-3/repo-seeds.tar.zst".to_string()), "{keys:?}");

    let rerun = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let done: Vec<(&str, Action)> =
        rerun.objects.iter().filter(|o| o.action != Action::Unchanged).map(|o| (o.key.as_str(), o.action)).collect();
    let expected_missing = done.iter().all(|(k, _)| k.starts_with("bootstrap/clawdinator-3/"));
    assert!(
        expected_missing && done.contains(&("bootstrap/clawdinator-3/repo-seeds.tar.zst", Action::Copy)),
        "{rerun}"
    );
    assert!(done.contains(&("bootstrap/clawdinator-3/manifest.json", Action::Create)), "{rerun}");
    assert_eq!((rerun.identities_created, rerun.identities_kept), (1, 2), "{rerun}");
    let again = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!((again.bytes_sent, again.unchanged), (0, 9), "{again}");
    let fetched = bootstrap::fetch(&env.aws, &fetch_opts(&env, 3)).await.unwrap();
    assert_eq!(fetched.seeds, ["sample"]);
}

/// A generic image: the host's bucket and prefix come from the files its
/// user data wrote (here under a scratch etc), not from the command line.
#[tokio::test(flavor = "multi_thread")]
async fn a_generic_host_learns_its_bucket_and_prefix_at_boot() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let opts = fetch_opts(&env, 2);
    let etc = env.path("host/etc/clawdinator");
    std::fs::create_dir_all(&etc).unwrap();
    let run = |etc: &Path| {
        fetch_cli(&env, env!("CARGO_BIN_EXE_clawdinator"), &opts)
            .arg("--bucket-file")
            .arg(etc.join("bucket"))
            .arg("--prefix-file")
            .arg(etc.join("bootstrap-prefix"))
            .env_remove("S3_BUCKET")
            .output()
            .unwrap()
    };
    let out = run(&etc);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bucket"));
    std::fs::write(etc.join("bucket"), format!("{}\n", env.bucket)).unwrap();
    std::fs::write(etc.join("bootstrap-prefix"), "bootstrap/clawdinator-2\n").unwrap();
    let out = run(&etc);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(opts.secrets_dir.join("clawdinator-discord-token-2.age").exists());
}

/// Bundle mode on a host: fetch, then `clawdinator secrets install` puts
/// exactly this instance's secrets, decrypted, 0400, into /run/agenix, for
/// the service user except the bots' App key, which stays root's; no value
/// reaches the output; a wrong identity changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_install_decrypts_the_bundle_into_run_agenix() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Handing files to another user takes root (CI runs as root).
    let as_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let owner: &[&str] = if as_root { &["--owner", "65534", "--group", "65534"] } else { &[] };
    if !as_root {
        eprintln!("not root: the files stay this user's, so who owns the App key is not checked here");
    }
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let opts = fetch_opts(&env, 2);
    bootstrap::fetch(&env.aws, &opts).await.unwrap();
    let dest = env.path("host/run/agenix");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("someone-elses"), "theirs").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["-vv", "secrets", "install", "--from"])
        .arg(&opts.secrets_dir)
        .arg("--identity")
        .arg(&opts.age_key_path)
        .arg("--dest")
        .arg(&dest)
        .args(owner)
        .args(["--root-only", "clawdinator-github-app.pem"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    if as_root {
        // Attack: the agent reads the key that mints GitHub tokens. It is root's, 0400.
        for name in ["clawdinator-github-app.pem", "clawdinator-discord-token-2"] {
            let uid = std::fs::metadata(dest.join(name)).unwrap().uid();
            assert_eq!(uid, if name.ends_with(".pem") { 0 } else { 65534 }, "{name}");
        }
    }
    assert!(!all.contains(testkit::env::CANARY), "a secret value reached the output: {all}");
    let spec = clawdinator::secrets::Spec::load(&fleet.sources.spec).unwrap();
    let mut want: Vec<String> = spec.common.clone();
    want.push("clawdinator-discord-token-2".into());
    for name in &want {
        let path = dest.join(name);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), canary_value(name), "{name}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400, "{name}");
    }
    assert!(!dest.join("clawdinator-discord-token-1").exists());
    assert_eq!(std::fs::read_to_string(dest.join("someone-elses")).unwrap(), "theirs");

    let before = snapshot(&dest);
    let wrong = env.path("wrong.agekey");
    fixtures::write_identity(&wrong).unwrap();
    let install = clawdinator::secrets::host::InstallOptions {
        from: opts.secrets_dir.clone(),
        identity: wrong.clone(),
        dest: dest.clone(),
        owners: Default::default(),
    };
    let err = clawdinator::secrets::host::install(&install).unwrap_err();
    assert!(format!("{err:#}").contains(&wrong.display().to_string()), "{err:#}");
    assert!(snapshot(&dest) == before, "a failed install changed /run/agenix");
}

/// Every fetch reads the manifest: the same bundle is left in force, a new
/// one becomes the next generation, and a bootstrapped host whose bucket is
/// out of reach keeps what it has (it must still boot).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_bundle_replaces_the_one_in_force_and_an_unreachable_bucket_keeps_it() {
    let env = env().await;
    let fleet = fleet(&env, 1).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let opts = fetch_opts(&env, 1);
    assert!(!bootstrap::fetch(&env.aws, &opts).await.unwrap().already_done);
    assert!(bootstrap::fetch(&env.aws, &opts).await.unwrap().already_done, "the same bundle fetched twice");

    let name = "clawdinator-openai-api-key-peter-2.age";
    fixtures::write_secret(
        &fleet.sources.secrets_dir,
        "clawdinator-openai-api-key-peter-2",
        b"rotated",
        &fleet.recipient,
    )
    .unwrap();
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let again = bootstrap::fetch(&env.aws, &opts).await.unwrap();
    assert!(!again.already_done, "a new bundle was not fetched");
    assert_eq!(open_with(&opts.age_key_path, &opts.secrets_dir.join(name)).unwrap(), b"rotated");
    let generations = std::fs::read_dir(opts.state_dir.join("generations")).unwrap().count();
    assert_eq!(generations, 1, "the old generation was left behind");

    env.emulator
        .inject(serde_json::json!({"operation": "GetObject", "match": "manifest.json", "times": -1, "status": 503, "code": "SlowDown"}))
        .unwrap();
    let before = snapshot(&opts.state_dir);
    let offline = bootstrap::fetch(&env.aws, &opts).await.unwrap();
    assert!(offline.already_done);
    assert_eq!(snapshot(&opts.state_dir), before);
}

/// The text of every object under `bootstrap/`, archives unpacked: names
/// and contents of each entry, lower-cased.
fn readable_text(key: &str, bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).to_lowercase();
    if key.ends_with(".zst") {
        let mut tar = tar::Archive::new(zstd::Decoder::new(bytes).unwrap());
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            text.push_str(&entry.path().unwrap().to_string_lossy().to_lowercase());
            text.push_str(&String::from_utf8_lossy(&content).to_lowercase());
        }
    }
    text
}

/// Attack: a principal that may read `bootstrap/` (CI, anyone with
/// s3:GetObject there) downloads every object of every bundle, unpacks the
/// archives and looks for a key. There is none: the bundles carry
/// ciphertext only. (The same search finds the identity an old-format
/// archive carried, so it can see one.)
#[tokio::test(flavor = "multi_thread")]
async fn no_object_of_any_bundle_holds_an_age_identity() {
    let env = env().await;
    let fleet = fleet(&env, 3).await;
    let report = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!(report.identities_created, 3, "{report}");
    let keys = env.keys().await;
    assert_eq!(keys.len(), 9, "{keys:?}");
    for key in keys.iter().filter(|k| k.starts_with("bootstrap/")) {
        let text = readable_text(key, &env.get(key).await);
        assert!(!text.contains("age-secret-key-"), "{key} holds an age identity");
        assert!(!text.contains("clawdinator.agekey"), "{key} names an identity file");
    }
    // Each identity is in Secrets Manager, under its instance's own name, tagged.
    for n in 1..=3 {
        let manifest = manifest_of(&env, n).await;
        let (tags, versions) = identity_secrets(&env).await[&identity_secret(n)].clone();
        assert_eq!(versions, 1);
        let recipient = manifest.identity_recipient.clone().unwrap();
        for tag in [
            ("app", "clawdinator"),
            ("clawdinator:instance", &format!("clawdinator-{n}")),
            (bootstrap::TAG_RECIPIENT, &recipient),
        ] {
            assert!(tags.contains(&(tag.0.to_string(), tag.1.to_string())), "{tags:?}");
        }
        assert_eq!(manifest.identity_version.as_deref(), Some(bootstrap::version_for(&recipient).as_str()));
        assert!(identity_value(&env, n, None).await.starts_with("AGE-SECRET-KEY-1"));
    }

    // Sabotage check: an archive of the old layout, identity inside, is seen.
    let mut builder = tar::Builder::new(Vec::new());
    let key_text = std::fs::read(&fleet.sources.age_key).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(key_text.len() as u64);
    header.set_cksum();
    builder.append_data(&mut header, "clawdinator.agekey", key_text.as_slice()).unwrap();
    let old = zstd::encode_all(builder.into_inner().unwrap().as_slice(), 3).unwrap();
    assert!(readable_text("secrets.tar.zst", &old).contains("age-secret-key-"));
}

/// A re-run with nothing changed writes no identity and reads none: one
/// listing for the whole fleet (not a request per instance), no
/// CreateSecret, PutSecretValue, TagResource, DeleteSecret or
/// GetSecretValue. CI never reads an identity, even on the first run.
#[tokio::test(flavor = "multi_thread")]
async fn identities_are_created_once_and_a_rerun_writes_none() {
    let env = env().await;
    let fleet = fleet(&env, 4).await;
    env.emulator.start_call_log().unwrap();
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let first = operations(&env, "secretsmanager");
    assert_eq!(first.iter().filter(|o| *o == "ListSecrets").count(), 1, "{first:?}");
    assert_eq!(first.iter().filter(|o| *o == "CreateSecret").count(), 4, "{first:?}");
    assert!(!first.contains(&"GetSecretValue".to_string()), "upload read an identity: {first:?}");

    env.emulator.start_call_log().unwrap();
    let again = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!(operations(&env, "secretsmanager"), ["ListSecrets"]);
    assert_eq!((again.identities_created, again.identities_rotated, again.identities_kept), (0, 0, 4));
    assert_eq!((again.uploaded, again.bytes_sent), (0, 0), "{again}");
    assert!(identity_secrets(&env).await.values().all(|(_, versions)| *versions == 1));
}

/// Rotation: the rotated instance gets a new identity version and a new
/// bundle, which a fetch opens; its old key opens nothing of it. A host
/// still holding the old manifest (and the old archive it names) still
/// opens it: it asks for exactly the version that manifest names. Other
/// instances are untouched.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_opens_the_new_bundle_and_the_old_manifest_still_opens_the_old() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    let opts = upload_opts(&fleet, &env.bucket);
    bootstrap::upload(&env.aws, &opts, &QUIET).await.unwrap();
    let host = fetch_opts(&env, 1);
    bootstrap::fetch(&env.aws, &host).await.unwrap();
    let old_key = std::fs::read(&host.age_key_path).unwrap();
    let (old_manifest, old_archive) = (
        env.get("bootstrap/clawdinator-1/manifest.json").await,
        env.get("bootstrap/clawdinator-1/secrets.tar.zst").await,
    );
    let untouched = env.get("bootstrap/clawdinator-2/manifest.json").await;

    let mut one = opts.clone();
    one.instances = vec!["clawdinator-1".into()];
    env.emulator.start_call_log().unwrap();
    let rotated = bootstrap::upload_rotating(&env.aws, &one, true, &QUIET).await.unwrap();
    assert_eq!(operations(&env, "secretsmanager"), ["ListSecrets", "PutSecretValue", "TagResource"]);
    assert_eq!((rotated.identities_rotated, rotated.identities_kept), (1, 0), "{rotated}");
    assert!(
        rotated.to_string().contains("rotated        identity clawdinator/clawdinator-1/age-identity"),
        "{rotated}"
    );
    let changed: Vec<_> =
        rotated.objects.iter().filter(|o| o.action == Action::Replace).map(|o| o.key.as_str()).collect();
    assert_eq!(changed, ["bootstrap/clawdinator-1/secrets.tar.zst", "bootstrap/clawdinator-1/manifest.json"]);
    assert_eq!(env.get("bootstrap/clawdinator-2/manifest.json").await, untouched);
    let manifest = manifest_of(&env, 1).await;
    let recipient = manifest.identity_recipient.clone().unwrap();
    assert_eq!(
        identity_secrets(&env).await[&identity_secret(1)].0.iter().find(|t| t.0 == bootstrap::TAG_RECIPIENT).unwrap().1,
        recipient
    );

    // The host fetches the new bundle and opens it with the new key, not the old one.
    let fetched = bootstrap::fetch(&env.aws, &host).await.unwrap();
    assert!(!fetched.already_done);
    let new_key = std::fs::read(&host.age_key_path).unwrap();
    assert_ne!(new_key, old_key);
    let sealed = host.secrets_dir.join("clawdinator-discord-token-1.age");
    assert_eq!(open_with(&host.age_key_path, &sealed).unwrap(), canary_value("clawdinator-discord-token-1").as_bytes());
    let old_file = env.path("old.agekey");
    std::fs::write(&old_file, &old_key).unwrap();
    assert!(open_with(&old_file, &sealed).is_err(), "the old key opens the rotated bundle");

    // A host holding the old manifest: it reads the old version and opens the old archive.
    env.put("bootstrap/clawdinator-1/manifest.json", old_manifest).await;
    env.put("bootstrap/clawdinator-1/secrets.tar.zst", old_archive).await;
    let mut late = fetch_opts(&env, 1);
    for p in [&mut late.secrets_dir, &mut late.seeds_dir, &mut late.age_key_path, &mut late.state_dir] {
        *p = env.path("late").join(p.file_name().unwrap());
    }
    late.prefix_file = None;
    bootstrap::fetch(&env.aws, &late).await.unwrap();
    assert_eq!(std::fs::read(&late.age_key_path).unwrap(), old_key);
    let sealed = late.secrets_dir.join("clawdinator-discord-token-1.age");
    assert_eq!(open_with(&late.age_key_path, &sealed).unwrap(), canary_value("clawdinator-discord-token-1").as_bytes());
}

/// A run that fails after creating identities but before any manifest
/// names them (here: every CreateSecret of instance 3 fails) removes the
/// ones it created and says so; the bucket is untouched; a re-run finishes
/// with one identity per instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_failing_after_creating_identities_removes_them_and_a_rerun_finishes() {
    let env = env().await;
    let fleet = fleet(&env, 3).await;
    env.emulator
        .inject(serde_json::json!({"operation": "CreateSecret", "match": "clawdinator-3/age-identity", "times": -1}))
        .unwrap();
    let err = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap_err();
    let text = format!("{err:#}");
    let removed = format!("no manifest names: {}, {}", identity_secret(1), identity_secret(2));
    assert!(text.contains("Secrets Manager CreateSecret") && text.contains(&removed), "{text}");
    assert!(identity_secrets(&env).await.is_empty(), "an identity this run created was left behind");
    assert!(env.keys().await.is_empty(), "a bundle was sent without its identity");
    assert!(!text.contains("AGE-SECRET-KEY"), "{text}");

    env.emulator.clear_faults().unwrap();
    let rerun = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!(rerun.identities_created, 3, "{rerun}");
    assert!(identity_secrets(&env).await.values().all(|(_, versions)| *versions == 1));
    let fetched = bootstrap::fetch(&env.aws, &fetch_opts(&env, 3)).await.unwrap();
    assert_eq!(fetched.identity_version, manifest_of(&env, 3).await.identity_version);
}

/// A rotation stopped between its two writes (the new version is current,
/// the tag still names the old key): the next run sees the tag and the
/// version disagree and rotates again rather than encrypt to a key the
/// version it would name does not hold.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_stopped_midway_is_rotated_again() {
    let env = env().await;
    let fleet = fleet(&env, 1).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    env.emulator.inject(serde_json::json!({"operation": "TagResource", "times": -1})).unwrap();
    let mut one = upload_opts(&fleet, &env.bucket);
    one.instances = vec!["clawdinator-1".into()];
    let err = bootstrap::upload_rotating(&env.aws, &one, true, &QUIET).await.unwrap_err();
    assert!(format!("{err:#}").contains("Secrets Manager TagResource"), "{err:#}");
    env.emulator.clear_faults().unwrap();

    let next = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!(next.identities_rotated, 1, "{next}");
    assert!(next.identities[0].note.as_deref().unwrap_or_default().contains("rotation stopped midway"), "{next}");
    let opts = fetch_opts(&env, 1);
    bootstrap::fetch(&env.aws, &opts).await.unwrap();
    let sealed = opts.secrets_dir.join("clawdinator-discord-token-1.age");
    assert!(open_with(&opts.age_key_path, &sealed).is_ok());
    assert_eq!(std::fs::read_to_string(&opts.age_key_path).unwrap().trim(), identity_value(&env, 1, None).await.trim());
}

/// A bundle of the old format (no identity version in its manifest: its
/// archive carried the identity) is rebuilt by the next upload; a host
/// refuses it meanwhile, and refuses any archive that carries an identity.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_format_bundle_is_rebuilt() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    edit_manifest(&env, 2, |m| (m.identity_version, m.identity_recipient) = (None, None)).await;
    let report = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let changed: Vec<_> =
        report.objects.iter().filter(|o| o.action != Action::Unchanged).map(|o| (o.key.as_str(), o.action)).collect();
    assert_eq!(
        changed,
        [
            ("bootstrap/clawdinator-2/secrets.tar.zst", Action::Replace),
            ("bootstrap/clawdinator-2/manifest.json", Action::Replace)
        ]
    );
    assert_eq!(report.identities_created, 0, "{report}");
    assert!(manifest_of(&env, 2).await.identity_version.is_some());
    bootstrap::fetch(&env.aws, &fetch_opts(&env, 2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_format_manifest_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| edit_manifest(env, 2, |m| m.identity_version = None).await,
        "is of the old format (its archive carries its own age identity): refused; run `cargo xtask bootstrap upload --instance clawdinator-2`",
    )
    .await;
}

/// Attack: whoever may write the bundle slips an identity into the archive
/// (so that the host would install a key the writer knows).
#[tokio::test(flavor = "multi_thread")]
async fn an_archive_carrying_an_identity_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| {
            replace_secrets_archive(env, hostile_archive("clawdinator.agekey", tar::EntryType::Regular, None)).await
        },
        "holds an age identity (clawdinator.agekey)",
    )
    .await;
}

/// A host whose identity is gone (deleted, or never readable by its role)
/// learns it before downloading anything: the error names the secret and
/// the fix, and the host's state is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_identity_is_refused_naming_the_secret_and_the_fix() {
    refused_with_state_untouched(
        async |env: &Env| {
            let sm = env.aws.secrets_manager();
            sm.delete_secret().secret_id(identity_secret(2)).force_delete_without_recovery(true).send().await.unwrap();
        },
        "cannot read this host's age identity clawdinator/clawdinator-2/age-identity",
    )
    .await;
}

/// A manifest whose recipient is not the key the named version holds (a
/// manifest edited by whoever may write the bucket) is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_identity_that_is_not_the_manifests_recipient_is_refused() {
    refused_with_state_untouched(
        async |env: &Env| {
            let other = age::x25519::Identity::generate().to_public().to_string();
            edit_manifest(env, 2, |m| m.identity_recipient = Some(other)).await
        },
        "is not the identity this bundle was encrypted to",
    )
    .await;
}

/// `secrets seed --prune` deletes secrets no local file stands for; the
/// bundles' identities are `bootstrap upload`'s and stay.
#[tokio::test(flavor = "multi_thread")]
async fn pruning_the_seeded_secrets_keeps_the_identities() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let seed = clawdinator::secrets::manager::SeedOptions {
        sources: fleet.sources.clone(),
        instances: vec![],
        dry_run: false,
        prune: true,
    };
    let report = clawdinator::secrets::manager::seed(&env.aws, &seed).await.unwrap();
    assert!(report.orphans.is_empty(), "{report}");
    assert_eq!(identity_secrets(&env).await.len(), 2);
}

/// The CLI, at its most verbose, never prints an instance's identity:
/// neither the upload that creates it nor the fetch that installs it.
#[tokio::test(flavor = "multi_thread")]
async fn no_identity_reaches_the_output() {
    let env = env().await;
    let fleet = fleet(&env, 1).await;
    let mut upload = env.cli(env!("CARGO_BIN_EXE_clawdinator"));
    upload.args(["-vv", "bootstrap", "upload", "--all", "--bucket", &env.bucket, "--repo-seeds"]);
    upload.arg(&fleet.seeds_dir).args(fixtures::source_args(&fleet.sources)).env("RUST_LOG", "trace");
    let opts = fetch_opts(&env, 1);
    let mut fetch = fetch_cli(&env, env!("CARGO_BIN_EXE_clawdinator"), &opts);
    fetch.args(["-vv", "--bucket", &env.bucket, "--prefix", "bootstrap/clawdinator-1"]).env("RUST_LOG", "trace");
    let mut printed = String::new();
    for mut command in [upload, fetch] {
        let out = command.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{text}");
        printed.push_str(&text);
    }
    let identity = identity_value(&env, 1, None).await;
    assert!(std::fs::read_to_string(&opts.age_key_path).unwrap().contains(&identity));
    assert!(!printed.contains(&identity[15..40]), "an identity was printed:\n{printed}");
    assert!(printed.contains("created") && printed.contains("identity"), "{printed}");
}

/// Two runs at once: this one listed no identity, another created it
/// before this one's CreateSecret landed (here, while that call stalls).
/// This run uses the other's identity and never writes a second one.
#[tokio::test(flavor = "multi_thread")]
async fn an_identity_created_by_another_run_meanwhile_is_used_not_replaced() {
    let env = env().await;
    let fleet = fleet(&env, 1).await;
    env.emulator
        .inject(serde_json::json!({"operation": "CreateSecret", "match": "clawdinator-1/age-identity", "stall": 2}))
        .unwrap();
    let opts = upload_opts(&fleet, &env.bucket);
    let theirs = age::x25519::Identity::generate();
    let recipient = theirs.to_public().to_string();
    let other_run = async {
        // Once this run's CreateSecret is held, the other run creates the identity.
        while env.emulator.faults().unwrap()[0]["fired"] != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let tag = |k: &str, v: &str| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build();
        env.aws
            .secrets_manager()
            .create_secret()
            .name(identity_secret(1))
            .secret_string(age::secrecy::ExposeSecret::expose_secret(&theirs.to_string()))
            .client_request_token(bootstrap::version_for(&recipient))
            .tags(tag("app", "clawdinator"))
            .tags(tag(bootstrap::TAG_RECIPIENT, &recipient))
            .send()
            .await
            .unwrap();
    };
    let (report, ()) = tokio::join!(bootstrap::upload(&env.aws, &opts, &QUIET), other_run);
    let report = report.unwrap();
    assert_eq!((report.identities_created, report.identities_kept), (0, 1), "{report}");
    assert!(report.identities[0].note.as_deref().unwrap_or_default().contains("another run"), "{report}");
    assert_eq!(identity_secrets(&env).await[&identity_secret(1)].1, 1, "a second identity was written");
    assert_eq!(manifest_of(&env, 1).await.identity_recipient.as_deref(), Some(recipient.as_str()));
    let host = fetch_opts(&env, 1);
    bootstrap::fetch(&env.aws, &host).await.unwrap();
    assert!(open_with(&host.age_key_path, &host.secrets_dir.join("clawdinator-discord-token-1.age")).is_ok());
}

/// An identity deleted with a recovery window is not listed; the upload
/// does not create another over it: it names the secret and the fix
/// (restore), and once restored the identity is used again.
#[tokio::test(flavor = "multi_thread")]
async fn an_identity_pending_deletion_is_named_with_the_fix() {
    let env = env().await;
    let fleet = fleet(&env, 2).await;
    bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    let before = manifest_of(&env, 2).await;
    let sm = env.aws.secrets_manager();
    sm.delete_secret().secret_id(identity_secret(2)).recovery_window_in_days(7).send().await.unwrap();
    let err = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("clawdinator/clawdinator-2/age-identity is scheduled for deletion: restore it"), "{text}");
    assert_eq!(manifest_of(&env, 2).await, before, "the bundle changed");

    sm.restore_secret().secret_id(identity_secret(2)).send().await.unwrap();
    let again = bootstrap::upload(&env.aws, &upload_opts(&fleet, &env.bucket), &QUIET).await.unwrap();
    assert_eq!((again.identities_created, again.identities_kept, again.bytes_sent), (0, 2, 0), "{again}");
}
