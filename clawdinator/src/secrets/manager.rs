//! AWS Secrets Manager: `secrets seed` (operator side: age files to
//! Secrets Manager, only what changed) and `secrets fetch` (host side: this
//! instance's secrets into `/run/agenix`).
//!
//! Values live only in `Zeroizing` buffers: never printed, logged, put in an
//! error, or written anywhere but the host's 0400 files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use serde::Serialize;
use zeroize::Zeroizing;

use super::files::{self, Sources};
use super::flags::{SecretsFetchArgs, SecretsSeedArgs};
use super::host::{self, FetchReport};
use crate::aws::{self, Aws};
use crate::ctx::Ctx;
use crate::registry::Registry;

pub const PREFIX: &str = "clawdinator/";
pub const TAG_INSTANCE: &str = "clawdinator:instance";

/// One secret as it should be in Secrets Manager.
pub struct Desired {
    pub name: String,
    pub instance: Option<String>,
    pub value: Zeroizing<Vec<u8>>,
}

/// `clawdinator/<name>` for a common secret.
pub fn common_name(file_stem: &str) -> String {
    format!("{PREFIX}{file_stem}")
}

/// `clawdinator/<instance>/discord-token` for an instance's token.
pub fn token_name(instance: &str) -> String {
    format!("{PREFIX}{instance}/discord-token")
}

/// `clawdinator/<instance>/age-identity`: the age identity that opens the
/// instance's bootstrap bundle (written by `bootstrap upload`, read by the
/// instance's own role alone).
pub fn identity_name(instance: &str) -> String {
    format!("{PREFIX}{instance}/age-identity")
}

impl Desired {
    fn tags(&self) -> Vec<Tag> {
        let mut tags = vec![Tag::builder().key("app").value("clawdinator").build()];
        if let Some(instance) = &self.instance {
            tags.push(Tag::builder().key(TAG_INSTANCE).value(instance).build());
        }
        tags
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedAction {
    Create,
    Update,
    Restore,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedRow {
    pub name: String,
    pub action: SeedAction,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedReport {
    pub dry_run: bool,
    pub secrets: Vec<SeedRow>,
    pub orphans: Vec<String>,
    pub pruned: Vec<String>,
}

impl crate::audit::Audited for SeedReport {
    /// The secrets created, updated or restored, and those pruned.
    fn resources(&self) -> Vec<String> {
        let changed = self.secrets.iter().filter(|s| !matches!(s.action, SeedAction::Unchanged));
        changed.map(|s| s.name.clone()).chain(self.pruned.iter().cloned()).collect()
    }
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.dry_run { "would " } else { "" };
        for row in &self.secrets {
            let what = match row.action {
                SeedAction::Create => format!("{would}create"),
                SeedAction::Update => format!("{would}update"),
                SeedAction::Restore => format!("{would}restore and update"),
                SeedAction::Unchanged => "unchanged".into(),
            };
            writeln!(f, "{what:<24} {}", row.name)?;
        }
        for name in &self.orphans {
            let fate = if self.pruned.contains(name) {
                "deleted (--prune)"
            } else {
                "orphan (no local file; --prune deletes it)"
            };
            writeln!(f, "{fate:<24} {name}")?;
        }
        let count = |a: SeedAction| self.secrets.iter().filter(|r| r.action == a).count();
        writeln!(
            f,
            "secrets seed{}: {} created, {} updated, {} restored, {} unchanged, {} orphan(s)",
            if self.dry_run { " (dry run, nothing written)" } else { "" },
            count(SeedAction::Create),
            count(SeedAction::Update),
            count(SeedAction::Restore),
            count(SeedAction::Unchanged),
            self.orphans.len()
        )
    }
}

#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub sources: Sources,
    pub instances: Vec<String>,
    pub dry_run: bool,
    pub prune: bool,
}

/// Decrypt every secret the selected instances need, in memory; any file
/// that cannot be read fails the whole run before anything is written.
fn desired(opts: &SeedOptions) -> Result<(Vec<Desired>, BTreeSet<String>)> {
    let (report, loaded) = files::check(&opts.sources, true);
    let Some((registry, spec)) = loaded else {
        let lines: Vec<String> =
            report.findings.iter().filter(|f| f.severity == files::Severity::Error).map(|f| f.to_string()).collect();
        bail!("nothing written: the secrets are not ready:\n  {}", lines.join("\n  "));
    };
    let identities = files::load_identities(&opts.sources.age_key)?;
    let read = |file: &str| -> Result<Zeroizing<Vec<u8>>> {
        let path = opts.sources.secrets_dir.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        files::decrypt(&path, &bytes, &identities, &opts.sources.age_key)
    };
    let mut out = Vec::new();
    for name in &spec.common {
        out.push(Desired { name: common_name(name), instance: None, value: read(&format!("{name}.age"))? });
    }
    for instance in registry.select(&opts.instances)? {
        out.push(Desired {
            name: token_name(&instance.host),
            instance: Some(instance.host.clone()),
            value: read(&instance.token_file())?,
        });
    }
    // Every name this fleet could own, whatever the selection: the rest are orphans.
    let mut known: BTreeSet<String> = spec.common.iter().map(|n| common_name(n)).collect();
    known.extend(registry.instances.keys().map(|i| token_name(i)));
    // The bundles' identities are `bootstrap upload`'s, not orphans: pruning
    // them would leave every host unable to open its next bundle.
    known.extend(registry.instances.keys().map(|i| identity_name(i)));
    Ok((out, known))
}

/// The secret's current value, or None when it does not exist; `deleted`
/// when it is pending deletion.
async fn current(sm: &aws_sdk_secretsmanager::Client, name: &str) -> Result<(Option<Zeroizing<Vec<u8>>>, bool)> {
    let described = match sm.describe_secret().secret_id(name).send().await {
        Ok(d) => d,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            return Ok((None, false))
        }
        Err(e) => return Err(aws::error("Secrets Manager DescribeSecret", name, e)),
    };
    if described.deleted_date().is_some() {
        return Ok((None, true));
    }
    match sm.get_secret_value().secret_id(name).send().await {
        Ok(v) => Ok((Some(value_of(&v).unwrap_or_default()), false)),
        // A secret created without a value has no current version.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            Ok((Some(Zeroizing::new(Vec::new())), false))
        }
        Err(e) => Err(aws::error("Secrets Manager GetSecretValue", name, e)),
    }
}

/// A secret version's value, text or binary.
pub fn value_of(
    out: &aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput,
) -> Option<Zeroizing<Vec<u8>>> {
    match (out.secret_string(), out.secret_binary()) {
        (Some(s), _) => Some(Zeroizing::new(s.as_bytes().to_vec())),
        (None, Some(b)) => Some(Zeroizing::new(b.as_ref().to_vec())),
        (None, None) => None,
    }
}

/// Names of the secrets this tool manages (tag app=clawdinator, name under
/// `clawdinator/`), pending deletion excluded.
async fn managed(sm: &aws_sdk_secretsmanager::Client) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut pages = sm
        .list_secrets()
        .filters(Filter::builder().key(FilterNameStringType::TagKey).values("app").build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("Secrets Manager ListSecrets", "tag app", e))?;
        for s in page.secret_list() {
            let tagged = s.tags().iter().any(|t| t.key() == Some("app") && t.value() == Some("clawdinator"));
            if tagged && s.deleted_date().is_none() {
                if let Some(name) = s.name().filter(|n| n.starts_with(PREFIX)) {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Store as SecretString when the value is text, as SecretBinary otherwise.
fn put_value<T>(value: &[u8], string: impl FnOnce(String) -> T, binary: impl FnOnce(Blob) -> T) -> T {
    match std::str::from_utf8(value) {
        Ok(text) => string(text.to_string()),
        Err(_) => binary(Blob::new(value.to_vec())),
    }
}

/// Bring one secret to its desired value as planned.
async fn apply(sm: &aws_sdk_secretsmanager::Client, d: &Desired, action: SeedAction) -> Result<()> {
    match action {
        SeedAction::Unchanged => {}
        SeedAction::Create => {
            let request = sm
                .create_secret()
                .name(&d.name)
                .set_tags(Some(d.tags()))
                .description("managed by cargo xtask secrets seed");
            let request =
                put_value(&d.value, |s| request.clone().secret_string(s), |b| request.clone().secret_binary(b));
            request.send().await.map_err(|e| aws::error("Secrets Manager CreateSecret", &d.name, e))?;
        }
        SeedAction::Update | SeedAction::Restore => {
            if action == SeedAction::Restore {
                sm.restore_secret()
                    .secret_id(&d.name)
                    .send()
                    .await
                    .map_err(|e| aws::error("Secrets Manager RestoreSecret", &d.name, e))?;
                // The restored value may already be the right one.
                if let (Some(v), _) = current(sm, &d.name).await? {
                    if v.as_slice() == d.value.as_slice() {
                        return Ok(());
                    }
                }
            }
            let request = sm.put_secret_value().secret_id(&d.name);
            let request =
                put_value(&d.value, |s| request.clone().secret_string(s), |b| request.clone().secret_binary(b));
            request.send().await.map_err(|e| aws::error("Secrets Manager PutSecretValue", &d.name, e))?;
            sm.tag_resource()
                .secret_id(&d.name)
                .set_tags(Some(d.tags()))
                .send()
                .await
                .map_err(|e| aws::error("Secrets Manager TagResource", &d.name, e))?;
        }
    }
    Ok(())
}

pub async fn seed(aws: &Aws, opts: &SeedOptions) -> Result<SeedReport> {
    let (desired, known) = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || desired(&opts)).await??
    };
    let sm = aws.secrets_manager();
    // Plan with reads only: an access problem shows up before any write.
    let mut plan = Vec::new();
    for d in &desired {
        let (value, deleted) = current(&sm, &d.name).await?;
        let action = match (value, deleted) {
            (_, true) => SeedAction::Restore,
            (None, false) => SeedAction::Create,
            (Some(v), false) if v.as_slice() == d.value.as_slice() => SeedAction::Unchanged,
            (Some(_), false) => SeedAction::Update,
        };
        plan.push(action);
    }
    let orphans: Vec<String> = managed(&sm).await?.into_iter().filter(|n| !known.contains(n)).collect();
    let mut report = SeedReport {
        dry_run: opts.dry_run,
        secrets: desired.iter().zip(&plan).map(|(d, a)| SeedRow { name: d.name.clone(), action: *a }).collect(),
        orphans: orphans.clone(),
        pruned: vec![],
    };
    if opts.dry_run {
        return Ok(report);
    }
    for (d, action) in desired.iter().zip(&plan) {
        apply(&sm, d, *action).await?;
    }
    if opts.prune {
        for name in &orphans {
            sm.delete_secret()
                .secret_id(name)
                .send()
                .await
                .map_err(|e| aws::error("Secrets Manager DeleteSecret", name, e))?;
            report.pruned.push(name.clone());
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------- fetch

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub instance: String,
    pub registry: PathBuf,
    pub spec: PathBuf,
    pub dest: PathBuf,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Files written for root alone (see [`host::Owners`]).
    pub root_only: Vec<String>,
}

pub async fn fetch(aws: &Aws, opts: &FetchOptions) -> Result<FetchReport> {
    let registry = Registry::load(&opts.registry)?;
    let instance = registry.select(std::slice::from_ref(&opts.instance))?[0].clone();
    let spec = files::Spec::load(&opts.spec)?;
    let owners = host::Owners {
        owner: crate::atomic::Owner::named(opts.owner.as_deref(), opts.group.as_deref())?,
        root_only: opts.root_only.clone(),
    };

    // File name on the host -> secret name in Secrets Manager.
    let mut wanted: BTreeMap<String, String> = spec.common.iter().map(|n| (n.clone(), common_name(n))).collect();
    wanted.insert(instance.discord_token_secret.clone(), token_name(&instance.host));

    // Every value is read before anything is written.
    let sm = aws.secrets_manager();
    let mut values = Vec::new();
    for (file, secret) in &wanted {
        let out = sm
            .get_secret_value()
            .secret_id(secret)
            .send()
            .await
            .map_err(|e| aws::error("Secrets Manager GetSecretValue", secret, e))?;
        let value = value_of(&out).with_context(|| format!("{secret} has no value"))?;
        values.push((file.clone(), value));
    }
    host::write_set(&opts.dest, &values, &owners)
}

impl SecretsSeedArgs {
    /// `secrets seed`: the age files into Secrets Manager, recorded in the audit trail.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = SeedOptions {
            sources: Sources::from_flags(&self.secrets),
            instances: self.select.names(),
            dry_run: self.dry_run,
            prune: self.prune,
        };
        let aws = ctx.aws().await?;
        let entry = crate::audit::Entry::named("secrets seed", &opts.instances, opts.dry_run);
        let report = entry.record(ctx, &aws, seed(&aws, &opts)).await?;
        ctx.out.emit(&report)
    }
}

impl SecretsFetchArgs {
    /// `secrets fetch`: a host's secrets from Secrets Manager.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = FetchOptions {
            instance: crate::settings::instance_name(self.instance, &self.instance_file)?,
            registry: self.instances.path,
            spec: self.spec,
            dest: self.dest,
            owner: self.owner.owner,
            group: self.owner.group,
            root_only: self.root_only,
        };
        let aws = ctx.aws().await?;
        ctx.out.emit(&fetch(&aws, &opts).await?)
    }
}
