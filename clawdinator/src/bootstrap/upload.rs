//! `bootstrap upload` (operator/CI side): build every instance's bundle and
//! send only what S3 does not already hold.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use zeroize::Zeroizing;

use super::archive::{self, Writer};
use super::identity::{self, IdentityAction, IdentityRow};
use super::manifest::{key, ArchiveInfo, Manifest, MANIFEST, MANIFEST_LIMIT, SECRETS_ARCHIVE, SEEDS_ARCHIVE};
use super::seeds::{self, SeedRecord};
use crate::aws::s3::{self, Body};
use crate::aws::Aws;
use crate::output::Output;
use crate::registry::{Instance, Registry};
use crate::secrets::{self, Sources};

#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub sources: Sources,
    pub seeds_dir: PathBuf,
    pub bucket: String,
    /// Instance names; empty means the whole fleet.
    pub instances: Vec<String>,
    pub dry_run: bool,
    pub concurrency: usize,
    pub source_revision: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Replace,
    Copy,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectPlan {
    pub instance: String,
    pub key: String,
    pub action: Action,
    /// Bytes this action sends (0 for copies and unchanged objects).
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReport {
    pub bucket: String,
    pub dry_run: bool,
    pub objects: Vec<ObjectPlan>,
    pub uploaded: usize,
    pub copied: usize,
    pub unchanged: usize,
    pub bytes_sent: u64,
    /// Links in the seeds that were not archived (the host refuses links).
    pub skipped_seed_links: Vec<String>,
    /// Each selected instance's age identity (in Secrets Manager, never in a bundle).
    pub identities: Vec<IdentityRow>,
    pub identities_created: usize,
    pub identities_rotated: usize,
    pub identities_kept: usize,
}

impl fmt::Display for UploadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |a: Action| match (a, self.dry_run) {
            (Action::Create, true) => "would create",
            (Action::Replace, true) => "would replace",
            (Action::Copy, true) => "would copy",
            (Action::Create, false) => "created",
            (Action::Replace, false) => "replaced",
            (Action::Copy, false) => "copied",
            (Action::Unchanged, _) => "unchanged",
        };
        for o in &self.objects {
            writeln!(f, "{:<16} {:<14} s3://{}/{}", o.instance, verb(o.action), self.bucket, o.key)?;
        }
        for row in self.identities.iter().filter(|r| r.action != IdentityAction::Keep) {
            let verb = match (row.action, self.dry_run) {
                (IdentityAction::Create, true) => "would create",
                (IdentityAction::Rotate, true) => "would rotate",
                (IdentityAction::Create, false) => "created",
                _ => "rotated",
            };
            let note = row.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            writeln!(f, "{:<16} {:<14} identity {}{note}", row.instance, verb, row.secret)?;
        }
        for link in &self.skipped_seed_links {
            writeln!(f, "warning: seeds link {link} left out (links are not shipped to hosts)")?;
        }
        let lead = if self.dry_run { "bootstrap upload (dry run, nothing written)" } else { "bootstrap upload" };
        writeln!(
            f,
            "{lead}: {} uploaded, {} copied, {} unchanged, {} sent; identities: {} created, {} rotated, {} kept",
            self.uploaded,
            self.copied,
            self.unchanged,
            indicatif::HumanBytes(self.bytes_sent),
            self.identities_created,
            self.identities_rotated,
            self.identities_kept
        )
    }
}

/// One instance's secrets archive (ciphertext only, to the instance's own
/// identity): built in memory, or the one the bucket holds already.
struct SecretsBundle {
    instance: Instance,
    /// Empty when the bucket's archive is kept.
    bytes: Zeroizing<Vec<u8>>,
    info: ArchiveInfo,
    secrets: Vec<String>,
    fingerprint: String,
    /// The identity's Secrets Manager version and public key.
    identity: (String, String),
}

/// What identifies an instance's secrets without decrypting them: the
/// digests of the source age files it gets (public ciphertext, no value).
fn secrets_fingerprint(files: &[String], sources: &Sources) -> Result<String> {
    let mut lines = String::from("clawdinator instance secrets v1\n");
    for file in files {
        let path = sources.secrets_dir.join(file);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        lines.push_str(&format!("{file} {}\n", crate::digest::sha256_hex(&bytes)));
    }
    Ok(crate::digest::sha256_hex(lines.as_bytes()))
}

/// The bucket's archive still holds exactly these secrets, encrypted to the
/// identity in force: keep it. A manifest of the old format (no identity
/// version: its archive carried the identity) never matches, so it is rebuilt.
fn kept_bundle(
    instance: &Instance,
    files: &[String],
    fingerprint: &str,
    identity: &IdentityRow,
    there: &Existing,
) -> Option<SecretsBundle> {
    let manifest = there.manifest.as_ref().filter(|m| {
        m.secrets_fingerprint.as_deref() == Some(fingerprint)
            && m.identity_version.as_deref() == Some(identity.version.as_str())
            && m.identity_recipient.as_deref() == Some(identity.recipient.as_str())
    })?;
    let info = manifest.archives.get(SECRETS_ARCHIVE)?;
    (there.secrets_sha.as_deref() == Some(info.sha256.as_str()) && manifest.secrets == files).then(|| SecretsBundle {
        instance: instance.clone(),
        bytes: Zeroizing::new(Vec::new()),
        info: info.clone(),
        secrets: files.to_vec(),
        fingerprint: fingerprint.to_string(),
        identity: (identity.version.clone(), identity.recipient.clone()),
    })
}

/// The fleet's secrets in the clear, each source file decrypted once
/// however many bundles hold it (a common secret is in every one).
struct Plaintexts<'a> {
    sources: &'a Sources,
    fleet_identities: Vec<age::x25519::Identity>,
    opened: HashMap<String, Zeroizing<Vec<u8>>>,
}

impl<'a> Plaintexts<'a> {
    fn new(sources: &'a Sources) -> Result<Self> {
        let fleet_identities = secrets::load_identities(&sources.age_key)?;
        Ok(Plaintexts { sources, fleet_identities, opened: HashMap::new() })
    }

    fn get(&mut self, file: &str) -> Result<&[u8]> {
        if !self.opened.contains_key(file) {
            let path = self.sources.secrets_dir.join(file);
            let sealed = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let plain = secrets::decrypt(&path, &sealed, &self.fleet_identities, &self.sources.age_key)?;
            self.opened.insert(file.to_string(), plain);
        }
        Ok(self.opened[file].as_slice())
    }
}

/// Build the secrets archive of one instance: every common secret and its
/// own token re-encrypted to the instance's own identity, in memory. The
/// archive holds ciphertext only (the identity is in Secrets Manager); the
/// fleet's identity never leaves this machine, so one bundle opens nothing
/// but its own instance's secrets, and only with that instance's role.
fn build_secrets_bundle(
    instance: &Instance,
    spec: &secrets::Spec,
    plaintexts: &mut Plaintexts,
    fingerprint: String,
    identity: &IdentityRow,
) -> Result<SecretsBundle> {
    let files = spec.files_for(instance);
    let recipient = [identity::recipient(identity)?];
    let mut writer = Writer::new(Vec::new())?;
    writer.dir("secrets", 0o700)?;
    for file in &files {
        let bytes = secrets::encrypt(plaintexts.get(file)?, &recipient)?;
        writer.file(&format!("secrets/{file}"), 0o400, bytes.len() as u64, bytes.as_slice())?;
    }
    let (bytes, summary) = writer.finish()?;
    Ok(SecretsBundle {
        instance: instance.clone(),
        bytes: Zeroizing::new(bytes),
        info: ArchiveInfo::from(summary),
        secrets: files,
        fingerprint,
        identity: (identity.version.clone(), identity.recipient.clone()),
    })
}

/// Read back what a built secrets archive holds and refuse unless it is
/// ciphertext only (`secrets/*.age`) and its tokens are exactly the
/// instance's own (checked on the bytes about to be sent).
fn verify_isolation(bundle: &SecretsBundle, spec: &secrets::Spec) -> Result<()> {
    if bundle.bytes.is_empty() {
        return Ok(()); // kept: checked when it was built
    }
    let mut tar = tar::Archive::new(zstd::Decoder::new(bundle.bytes.as_slice())?);
    let mut tokens = Vec::new();
    for entry in tar.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let name = path.strip_prefix("secrets/").filter(|n| n.is_empty() || n.ends_with(".age"));
        ensure!(
            name.is_some(),
            "refusing to upload: the bundle of `{}` would hold {path}; a bundle carries ciphertext (secrets/*.age) only",
            bundle.instance.host
        );
        if let Some(name) = name.filter(|n| spec.is_token_file(n)) {
            tokens.push(name.to_string());
        }
    }
    let own = bundle.instance.token_file();
    ensure!(
        tokens == [own.clone()],
        "refusing to upload: the bundle of `{}` would hold tokens {tokens:?}, not exactly its own {own}",
        bundle.instance.host
    );
    Ok(())
}

/// Everything checked and the secrets archives built; nothing sent yet.
struct Prepared {
    bundles: Vec<SecretsBundle>,
    seed_records: Vec<SeedRecord>,
    /// What identifies the seeds archive without building it.
    seeds_fingerprint: String,
    skipped_links: Vec<String>,
}

/// The registry and the secrets list, once every secret checks out.
fn ready(opts: &UploadOptions) -> Result<(Registry, secrets::Spec)> {
    let (report, loaded) = secrets::check(&opts.sources, true);
    loaded.ok_or_else(|| {
        let lines: Vec<String> =
            report.findings.iter().filter(|f| f.severity == secrets::Severity::Error).map(|f| f.to_string()).collect();
        anyhow::anyhow!("nothing uploaded: the secrets are not ready:\n  {}", lines.join("\n  "))
    })
}

/// The seeds' fingerprint and the links left out: metadata only, local.
type SeedsFingerprint = (String, Vec<String>);

/// Fingerprint the seeds on a blocking thread, started before the bucket
/// and Secrets Manager are read, so walking 10,000 files overlaps those
/// round trips instead of following them.
fn fingerprint_seeds(opts: &UploadOptions) -> tokio::task::JoinHandle<Result<SeedsFingerprint>> {
    let dir = opts.seeds_dir.clone();
    tokio::task::spawn_blocking(move || {
        archive::fingerprint_tree(&dir, "repo-seeds")
            .with_context(|| format!("cannot read the seeds in {}", dir.display()))
    })
}

/// Build the secrets archives the bucket lacks (`existing` and `identities`
/// are in the registry's order of the selected instances); the seeds'
/// fingerprint comes from [`fingerprint_seeds`].
fn prepare(
    opts: &UploadOptions,
    (registry, spec): (&Registry, &secrets::Spec),
    existing: &[Existing],
    identities: &[IdentityRow],
    fingerprint: Result<SeedsFingerprint>,
) -> Result<Prepared> {
    let instances = registry.select(&opts.instances)?;
    let seed_records = seeds::load_records(&opts.seeds_dir)?;
    let mut plaintexts = Plaintexts::new(&opts.sources)?;
    let bundles = instances
        .iter()
        .zip(existing)
        .zip(identities)
        .map(|((instance, there), identity)| {
            let files = spec.files_for(instance);
            let fingerprint = secrets_fingerprint(&files, &opts.sources)?;
            match kept_bundle(instance, &files, &fingerprint, identity, there) {
                Some(kept) => Ok(kept),
                None => build_secrets_bundle(instance, spec, &mut plaintexts, fingerprint, identity),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    for bundle in &bundles {
        verify_isolation(bundle, spec)?;
    }
    let (seeds_fingerprint, skipped_links) = fingerprint?;
    Ok(Prepared { bundles, seed_records, seeds_fingerprint, skipped_links })
}

/// What the bucket holds for one instance.
#[derive(Clone)]
struct Existing {
    secrets_sha: Option<String>,
    seeds_sha: Option<String>,
    manifest: Option<Manifest>,
    /// An object is at the manifest's key (readable as a manifest or not).
    manifest_present: bool,
}

/// One object as the bucket lists it.
#[derive(Clone, Copy)]
struct Listed {
    size: u64,
    modified: Option<aws_smithy_types::DateTime>,
}

/// Where the prefixes' objects are listed from: each prefix's parent folder
/// (`bootstrap/` for `bootstrap/clawdinator-1`), or the prefix itself when it
/// has none, so a fleet is one listing, not a request per object.
fn list_roots(prefixes: &[String]) -> std::collections::BTreeSet<String> {
    prefixes
        .iter()
        .map(|p| {
            let p = p.trim_end_matches('/');
            match p.rfind('/') {
                Some(i) => p[..=i].to_string(),
                None => format!("{p}/"),
            }
        })
        .collect()
}

/// Every object under the prefixes' parents, by key (ListObjectsV2, 1,000 keys a page).
async fn list(s3c: &aws_sdk_s3::Client, bucket: &str, prefixes: &[String]) -> Result<HashMap<String, Listed>> {
    let mut listed = HashMap::new();
    for root in list_roots(prefixes) {
        let mut pages = s3c.list_objects_v2().bucket(bucket).prefix(&root).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| crate::aws::error("S3 ListObjectsV2", &s3::url(bucket, &root), e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let size = object.size().unwrap_or(0).max(0) as u64;
                listed.insert(key.to_string(), Listed { size, modified: object.last_modified().copied() });
            }
        }
    }
    Ok(listed)
}

/// The SHA-256 an archive holds: none when it is not listed; what the
/// manifest records when the listed object is the one it describes (that
/// size, written no later than the manifest, which every upload writes
/// last); otherwise what the object itself records (HeadObject). An archive
/// a stopped run replaced differs from the manifest's inputs too, so its
/// fingerprint sends it again; what only the time tells is a hand's
/// rewrite, and S3 lists times to the second: one within the manifest's
/// second is left to the host, which refuses an archive of another SHA-256.
async fn archive_sha(
    s3c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    object: Option<&Listed>,
    described: Option<(&ArchiveInfo, &Listed)>,
) -> Result<Option<String>> {
    let Some(object) = object else { return Ok(None) };
    if let Some((info, manifest)) = described {
        let older = matches!((object.modified, manifest.modified), (Some(a), Some(m)) if a <= m);
        if older && object.size == info.size {
            return Ok(Some(info.sha256.clone()));
        }
    }
    s3::head_sha256(s3c, bucket, key).await
}

/// What the bucket holds under `prefix`, from the listing and its manifest
/// (read only when listed): at most one request for an unchanged instance.
async fn existing(
    s3c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    listed: &HashMap<String, Listed>,
    stall: std::time::Duration,
) -> Result<Existing> {
    let [manifest_key, secrets_key, seeds_key] = [MANIFEST, SECRETS_ARCHIVE, SEEDS_ARCHIVE].map(|n| key(prefix, n));
    let manifest_listed = listed.get(&manifest_key);
    let bytes = match manifest_listed {
        Some(_) => s3::get_bytes(s3c, bucket, &manifest_key, MANIFEST_LIMIT, stall).await?,
        None => None,
    };
    let manifest: Option<Manifest> = bytes.as_deref().and_then(|b| serde_json::from_slice(b).ok());
    let described = |name: &str| Some((manifest.as_ref()?.archives.get(name)?, manifest_listed?));
    let (secrets_sha, seeds_sha) = tokio::try_join!(
        archive_sha(s3c, bucket, &secrets_key, listed.get(&secrets_key), described(SECRETS_ARCHIVE)),
        archive_sha(s3c, bucket, &seeds_key, listed.get(&seeds_key), described(SEEDS_ARCHIVE)),
    )?;
    Ok(Existing { secrets_sha, seeds_sha, manifest, manifest_present: bytes.is_some() })
}

/// What the bucket holds under each prefix, in the order given (reads
/// only): one listing, then each listed manifest, `concurrency` at a time.
async fn look_up(aws: &Aws, opts: &UploadOptions, prefixes: &[String]) -> Result<Vec<Existing>> {
    let (s3c, stall, bucket) = (aws.s3(), aws.timeouts().read, opts.bucket.as_str());
    let listed = list(&s3c, bucket, prefixes).await?;
    futures::stream::iter(prefixes.iter().map(|prefix| existing(&s3c, bucket, prefix, &listed, stall)))
        .buffered(opts.concurrency.max(1))
        .try_collect()
        .await
}

/// The seeds archive of this run, and its file when it had to be built.
struct SeedsArchive {
    info: ArchiveInfo,
    file: Option<PathBuf>,
}

/// The archive an earlier upload recorded for the same seeds fingerprint,
/// while some prefix still holds it (then nothing is compressed); otherwise
/// built once into the private working directory.
async fn seeds_archive(
    opts: &UploadOptions,
    prepared: &Prepared,
    existing: &[Existing],
    workdir: &Path,
) -> Result<SeedsArchive> {
    let recorded = existing.iter().find_map(|e| {
        let m = e.manifest.as_ref().filter(|m| m.seeds_fingerprint.as_deref() == Some(&prepared.seeds_fingerprint))?;
        let info = m.archives.get(SEEDS_ARCHIVE)?;
        (e.seeds_sha.as_deref() == Some(info.sha256.as_str())).then(|| info.clone())
    });
    if let Some(info) = recorded {
        return Ok(SeedsArchive { info, file: None });
    }
    let (dir, file) = (opts.seeds_dir.clone(), workdir.join(SEEDS_ARCHIVE));
    tokio::task::spawn_blocking(move || -> Result<SeedsArchive> {
        let out = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file)?;
        let mut writer = Writer::new_parallel(std::io::BufWriter::with_capacity(1 << 20, out))?;
        archive::write_tree(&mut writer, &dir, "repo-seeds")
            .with_context(|| format!("cannot archive the seeds in {}", dir.display()))?;
        let (out, summary) = writer.finish()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(SeedsArchive { info: ArchiveInfo::from(summary), file: Some(file) })
    })
    .await?
}

fn action_for(existing: Option<&str>, want: &str) -> Action {
    match existing {
        None => Action::Create,
        Some(sha) if sha == want => Action::Unchanged,
        Some(_) => Action::Replace,
    }
}

/// One instance's plan: what happens to each of its three objects.
struct Planned<'a> {
    bundle: &'a SecretsBundle,
    secrets: Action,
    seeds: Action,
    manifest: Action,
    manifest_bytes: Vec<u8>,
}

/// The manifest this run writes for `bundle`, or the one already there when
/// its content is the same (so an unchanged bundle sends nothing).
fn manifest_for(
    opts: &UploadOptions,
    prepared: &Prepared,
    seeds: &ArchiveInfo,
    bundle: &SecretsBundle,
    existing: &Existing,
    created: &str,
) -> Result<(Action, Vec<u8>)> {
    let manifest = Manifest {
        instance: bundle.instance.host.clone(),
        prefix: bundle.instance.bootstrap_prefix.clone(),
        archives: BTreeMap::from([
            (SECRETS_ARCHIVE.to_string(), bundle.info.clone()),
            (SEEDS_ARCHIVE.to_string(), seeds.clone()),
        ]),
        secrets: bundle.secrets.clone(),
        identity_version: Some(bundle.identity.0.clone()),
        identity_recipient: Some(bundle.identity.1.clone()),
        secrets_fingerprint: Some(bundle.fingerprint.clone()),
        seeds: prepared.seed_records.clone(),
        seeds_fingerprint: Some(prepared.seeds_fingerprint.clone()),
        source_revision: opts.source_revision.clone(),
        created: created.to_string(),
    };
    let (action, manifest) = match &existing.manifest {
        Some(old) if old.same_content(&manifest) => (Action::Unchanged, old.clone()),
        _ if existing.manifest_present => (Action::Replace, manifest),
        _ => (Action::Create, manifest),
    };
    Ok((action, serde_json::to_vec_pretty(&manifest)?))
}

/// The whole plan: per instance, and where the seeds archive comes from (sent
/// at most once; every other prefix copies it server-side).
struct Plan<'a> {
    planned: Vec<Planned<'a>>,
    seeds_upload: Option<String>,
    seeds_source: Option<String>,
}

fn plan<'a>(
    opts: &UploadOptions,
    prepared: &'a Prepared,
    seeds: &SeedsArchive,
    existing: &[Existing],
) -> Result<Plan<'a>> {
    let created = crate::clock::now_rfc3339();
    let mut planned = Vec::new();
    for (bundle, there) in prepared.bundles.iter().zip(existing) {
        let (manifest, manifest_bytes) = manifest_for(opts, prepared, &seeds.info, bundle, there, &created)?;
        planned.push(Planned {
            bundle,
            secrets: action_for(there.secrets_sha.as_deref(), &bundle.info.sha256),
            seeds: action_for(there.seeds_sha.as_deref(), &seeds.info.sha256),
            manifest,
            manifest_bytes,
        });
    }
    let seeds_key = |p: &Planned| key(&p.bundle.instance.bootstrap_prefix, SEEDS_ARCHIVE);
    let in_place = planned.iter().find(|p| p.seeds == Action::Unchanged).map(seeds_key);
    let seeds_upload = match in_place {
        Some(_) => None,
        None => planned.iter().find(|p| p.seeds != Action::Unchanged).map(seeds_key),
    };
    ensure!(
        seeds_upload.is_none() || seeds.file.is_some(),
        "internal: the seeds archive was reused but nothing holds it"
    );
    Ok(Plan { seeds_source: in_place.or(seeds_upload.clone()), seeds_upload, planned })
}

/// What the plan does to every object and identity, for the report.
fn report(
    opts: &UploadOptions,
    plan: &Plan,
    seeds: &SeedsArchive,
    prepared: &Prepared,
    identities: &[identity::Planned],
) -> UploadReport {
    let mut objects = Vec::new();
    let count = |a: IdentityAction| identities.iter().filter(|i| i.row.action == a).count();
    let bytes = |a: Action, n: u64| if matches!(a, Action::Create | Action::Replace) { n } else { 0 };
    for p in &plan.planned {
        let (prefix, name) = (&p.bundle.instance.bootstrap_prefix, &p.bundle.instance.host);
        let seeds_key = key(prefix, SEEDS_ARCHIVE);
        let seeds_action = match p.seeds {
            Action::Unchanged => Action::Unchanged,
            a if plan.seeds_upload.as_deref() == Some(seeds_key.as_str()) => a,
            _ => Action::Copy,
        };
        let mut object = |key: String, action: Action, size: u64| {
            objects.push(ObjectPlan { instance: name.clone(), key, action, bytes: bytes(action, size) })
        };
        object(key(prefix, SECRETS_ARCHIVE), p.secrets, p.bundle.info.size);
        object(seeds_key, seeds_action, seeds.info.size);
        object(key(prefix, MANIFEST), p.manifest, p.manifest_bytes.len() as u64);
    }
    UploadReport {
        bucket: opts.bucket.clone(),
        dry_run: opts.dry_run,
        uploaded: objects.iter().filter(|o| matches!(o.action, Action::Create | Action::Replace)).count(),
        copied: objects.iter().filter(|o| o.action == Action::Copy).count(),
        unchanged: objects.iter().filter(|o| o.action == Action::Unchanged).count(),
        bytes_sent: objects.iter().map(|o| o.bytes).sum(),
        objects,
        skipped_seed_links: prepared.skipped_links.clone(),
        identities: identities.iter().map(|i| i.row.clone()).collect(),
        identities_created: count(IdentityAction::Create),
        identities_rotated: count(IdentityAction::Rotate),
        identities_kept: count(IdentityAction::Keep),
    }
}

/// One instance's objects: its secrets archive and its seeds (the one
/// upload, or a server-side copy once `seeds_put` has it in place) side by
/// side, then its manifest, last, so a host that reads a manifest finds its
/// archives in place.
async fn send_instance(
    s3c: &aws_sdk_s3::Client,
    (bucket, plan): (&str, &Plan<'_>),
    p: &Planned<'_>,
    seeds_put: impl std::future::Future<Output = Result<(), String>>,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let prefix = &p.bundle.instance.bootstrap_prefix;
    let put_secrets = async {
        if p.secrets != Action::Unchanged {
            let (body, sha) = (Body::Bytes(&p.bundle.bytes), &p.bundle.info.sha256);
            s3::put(s3c, bucket, &key(prefix, SECRETS_ARCHIVE), body, sha, "application/zstd").await?;
            bar.inc(p.bundle.info.size);
        }
        anyhow::Ok(())
    };
    let place_seeds = async {
        seeds_put.await.map_err(|e| anyhow::anyhow!(e))?;
        let seeds_key = key(prefix, SEEDS_ARCHIVE);
        if p.seeds != Action::Unchanged && plan.seeds_upload.as_deref() != Some(seeds_key.as_str()) {
            let source = plan.seeds_source.as_deref().expect("a source exists when a copy is planned");
            s3::copy(s3c, bucket, source, &seeds_key).await?;
        }
        anyhow::Ok(())
    };
    tokio::try_join!(put_secrets, place_seeds)?;
    if p.manifest != Action::Unchanged {
        let (k, sha) = (key(prefix, MANIFEST), crate::digest::sha256_hex(&p.manifest_bytes));
        s3::put(s3c, bucket, &k, Body::Bytes(&p.manifest_bytes), &sha, "application/json").await?;
        bar.inc(p.manifest_bytes.len() as u64);
    }
    Ok(())
}

/// Carry the plan out, `concurrency` instances at a time, each on its own.
async fn send(
    aws: &Aws,
    opts: &UploadOptions,
    plan: &Plan<'_>,
    seeds: &SeedsArchive,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    use futures::FutureExt;
    let (s3c, bucket) = (aws.s3(), opts.bucket.as_str());
    // Every copy waits for the one upload; its error reaches each of them.
    let seeds_put = async {
        if let (Some(k), Some(file)) = (&plan.seeds_upload, &seeds.file) {
            s3::put(&s3c, bucket, k, Body::File(file), &seeds.info.sha256, "application/zstd")
                .await
                .map_err(|e| format!("{e:#}"))?;
            bar.inc(seeds.info.size);
        }
        Ok::<(), String>(())
    }
    .shared();
    let instances = plan.planned.iter().map(|p| send_instance(&s3c, (bucket, plan), p, seeds_put.clone(), bar));
    // Every instance runs to its end even when another fails: no manifest is
    // left in flight, so which manifests the bucket holds afterwards is
    // settled (the clean-up of identities reads them).
    let results: Vec<Result<()>> =
        futures::stream::iter(instances).buffer_unordered(opts.concurrency.max(1)).collect().await;
    results.into_iter().collect()
}

/// Upload without rotating any identity (what CI's pipeline runs).
pub async fn upload(aws: &Aws, opts: &UploadOptions, out: &Output) -> Result<UploadReport> {
    upload_rotating(aws, opts, false, out).await
}

/// The selected instances, once each, in the order given.
fn selected(opts: &UploadOptions) -> UploadOptions {
    let mut seen = std::collections::BTreeSet::new();
    let mut opts = opts.clone();
    opts.instances.retain(|name| seen.insert(name.clone()));
    opts
}

/// `bootstrap upload`: identities first (created when missing, rotated when
/// `rotate`), then every bundle encrypted to its instance's identity.
pub async fn upload_rotating(aws: &Aws, opts: &UploadOptions, rotate: bool, out: &Output) -> Result<UploadReport> {
    let opts = &selected(opts);
    // The registry and the secrets first (bad input fails before any AWS
    // call); then the bucket and Secrets Manager, read only.
    let (registry, spec) = ready(opts)?;
    let selection = registry.select(&opts.instances)?;
    let prefixes: Vec<String> = selection.iter().map(|i| i.bootstrap_prefix.clone()).collect();
    let names: Vec<String> = selection.iter().map(|i| i.host.clone()).collect();
    let fingerprint = fingerprint_seeds(opts);
    let (existing, mut identities) =
        tokio::try_join!(look_up(aws, opts, &prefixes), identity::plan(aws, &names, rotate))?;
    if opts.dry_run {
        return bundles(aws, opts, (registry, spec), (existing, fingerprint), &identities, out).await;
    }
    // An identity is in Secrets Manager before any manifest names it.
    let (created, failed) = identity::write(aws, &mut identities, opts.concurrency).await;
    let result = match failed {
        Some(e) => Err(e),
        None => bundles(aws, opts, (registry, spec), (existing, fingerprint), &identities, out).await,
    };
    match result {
        Err(e) if !created.is_empty() => Err(clean_up(aws, opts, (&identities, &prefixes), &created, e).await),
        other => other,
    }
}

/// Build, plan and (unless a dry run) send every selected bundle.
async fn bundles(
    aws: &Aws,
    opts: &UploadOptions,
    (registry, spec): (Registry, secrets::Spec),
    (existing, fingerprint): (Vec<Existing>, tokio::task::JoinHandle<Result<SeedsFingerprint>>),
    identities: &[identity::Planned],
    out: &Output,
) -> Result<UploadReport> {
    let workdir = crate::atomic::private_workdir()?;
    let fingerprint = fingerprint.await?;
    let prepared = {
        let (opts, existing) = (opts.clone(), existing.clone());
        let rows: Vec<IdentityRow> = identities.iter().map(|i| i.row.clone()).collect();
        tokio::task::spawn_blocking(move || prepare(&opts, (&registry, &spec), &existing, &rows, fingerprint)).await??
    };
    tracing::info!(bundles = prepared.bundles.len(), "bundles built, seeds fingerprinted, bucket looked up");
    let seeds = seeds_archive(opts, &prepared, &existing, workdir.path()).await?;
    tracing::info!(built = seeds.file.is_some(), size = seeds.info.size, "seeds archive ready");
    let plan = plan(opts, &prepared, &seeds, &existing)?;
    let report = report(opts, &plan, &seeds, &prepared, identities);
    if opts.dry_run {
        return Ok(report);
    }
    let bar = out.progress(report.bytes_sent, "uploading");
    send(aws, opts, &plan, &seeds, &bar).await?;
    tracing::info!(bytes = report.bytes_sent, "sent");
    bar.finish_and_clear();
    drop(workdir);
    Ok(report)
}

/// The run failed after creating identities: remove each one no manifest
/// names (read back from the bucket, which is settled), and say exactly
/// what was removed and what stays.
async fn clean_up(
    aws: &Aws,
    opts: &UploadOptions,
    (identities, prefixes): (&[identity::Planned], &[String]),
    created: &[String],
    error: anyhow::Error,
) -> anyhow::Error {
    let (mut removed, mut kept, mut left) = (Vec::new(), Vec::new(), Vec::new());
    for (p, prefix) in identities.iter().zip(prefixes).filter(|(p, _)| created.contains(&p.row.secret)) {
        let secret = p.row.secret.clone();
        match named_by_manifest(aws, opts, prefix, &p.row.version).await {
            Ok(true) => kept.push(format!("{secret} (its manifest names it)")),
            Ok(false) => match identity::remove_created(aws, &secret).await {
                Ok(()) => removed.push(secret),
                Err(e) => left.push(format!("{secret} ({e:#})")),
            },
            Err(e) => left.push(format!("{secret} (cannot read its manifest to tell: {e:#})")),
        }
    }
    let mut lines = Vec::new();
    if !removed.is_empty() {
        lines
            .push(format!("removed the age identities this run created and no manifest names: {}", removed.join(", ")));
    }
    if !kept.is_empty() {
        lines.push(format!("kept the identities this run created for bundles it finished: {}", kept.join(", ")));
    }
    if !left.is_empty() {
        lines.push(format!("could not remove (a re-run uses them, no second identity): {}", left.join(", ")));
    }
    lines.push("re-run `cargo xtask bootstrap upload` to finish".into());
    error.context(format!("bootstrap upload failed; {}", lines.join("; ")))
}

/// Does the manifest under `prefix` name identity `version`?
async fn named_by_manifest(aws: &Aws, opts: &UploadOptions, prefix: &str, version: &str) -> Result<bool> {
    let k = key(prefix, MANIFEST);
    let bytes = s3::get_bytes(&aws.s3(), &opts.bucket, &k, MANIFEST_LIMIT, aws.timeouts().read).await?;
    let manifest: Option<Manifest> = bytes.as_deref().and_then(|b| serde_json::from_slice(b).ok());
    Ok(manifest.is_some_and(|m| m.identity_version.as_deref() == Some(version)))
}
