//! Fleet AMIs: their tags, `image ami latest`, `image ami list` and `image ami prune`.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::types::{Filter, Image, ImageState, InstanceStateName, SnapshotState, Tag};
use serde::Serialize;

use super::build::ImageManifest;
use super::flags::{AmiCmd, AmiLatestArgs, AmiPruneArgs};
use crate::audit::{Audited, Entry};
use crate::aws::{self, Aws};
use crate::ctx::Ctx;
use crate::output;

pub const TAG_FLEET: &str = "clawdinator";
pub const TAG_APP: &str = "app";
pub const TAG_SHA256: &str = "clawdinator:image-sha256";
pub const TAG_STORE_PATH: &str = "clawdinator:nix-store-path";
pub const TAG_REVISION: &str = "clawdinator:git-revision";
pub const TAG_MANAGED_BY: &str = "ManagedBy";
pub const MANAGED_BY: &str = "clawdinators-xtask";
/// The KMS key the snapshot was asked to be encrypted with, or `default`.
pub const TAG_KMS_KEY: &str = "clawdinator:kms-key";
const KMS_DEFAULT: &str = "default";

/// What makes two publishes the same AMI: the image's bytes and the key its
/// snapshot is encrypted with. An `--kms-key` publish never returns an AMI
/// published without it, nor the reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sha256: String,
    pub kms_key: Option<String>,
}

impl Identity {
    pub fn kms_tag(&self) -> &str {
        self.kms_key.as_deref().unwrap_or(KMS_DEFAULT)
    }

    /// DescribeImages/DescribeSnapshots filters for this image's digest;
    /// [`Identity::matches`] then checks the key.
    pub fn filters(&self) -> Vec<Filter> {
        vec![filter(&format!("tag:{TAG_SHA256}"), &self.sha256)]
    }

    /// Is a resource with these tags (and this image's digest) of this
    /// identity? One without the key tag was published before the tag
    /// existed, without a chosen key: it is the default identity.
    pub fn matches(&self, tags: &[Tag]) -> bool {
        let kms = tags.iter().find(|t| t.key() == Some(TAG_KMS_KEY)).and_then(|t| t.value());
        kms.unwrap_or(KMS_DEFAULT) == self.kms_tag()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tag {TAG_SHA256}={}, {TAG_KMS_KEY}={}", self.sha256, self.kms_tag())
    }
}

/// The tags every fleet AMI and its snapshot carry.
pub fn fleet_tags(image: &ImageManifest, identity: &Identity) -> Vec<(String, String)> {
    let mut revision = image.source_revision.clone().unwrap_or_else(|| "unknown".into());
    if image.dirty {
        revision.push_str("-dirty");
    }
    vec![
        ("Name".into(), image.ami_name_for(identity.kms_key.as_deref())),
        (TAG_FLEET.into(), "true".into()),
        (TAG_APP.into(), "clawdinator".into()),
        (TAG_SHA256.into(), image.sha256.clone()),
        (TAG_STORE_PATH.into(), image.store_path.clone()),
        (TAG_REVISION.into(), revision),
        (TAG_KMS_KEY.into(), identity.kms_tag().into()),
        (TAG_MANAGED_BY.into(), MANAGED_BY.into()),
    ]
}

pub fn ec2_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

pub fn tag<'a>(image: &'a Image, key: &str) -> Option<&'a str> {
    image.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Fleet AMIs owned by this account, newest first; ties broken by id so the
/// order is the same on every call.
pub async fn fleet_images(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Image>> {
    let mut images = Vec::new();
    let mut pages = ec2
        .describe_images()
        .owners("self")
        .filters(filter(&format!("tag:{TAG_FLEET}"), "true"))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("EC2 DescribeImages", "owner self, tag clawdinator=true", e))?;
        images.extend(page.images().iter().cloned());
    }
    sort_newest_first(&mut images);
    Ok(images)
}

pub fn sort_newest_first(images: &mut [Image]) {
    images.sort_by(|a, b| {
        b.creation_date()
            .unwrap_or_default()
            .cmp(a.creation_date().unwrap_or_default())
            .then_with(|| b.image_id().unwrap_or_default().cmp(a.image_id().unwrap_or_default()))
    });
}

/// The AMI's state as EC2 names it (for messages; compare with [`is_available`]).
pub fn state(image: &Image) -> &str {
    image.state().map(|s| s.as_str()).unwrap_or_default()
}

/// Can instances launch from it?
pub fn is_available(image: &Image) -> bool {
    image.state() == Some(&ImageState::Available)
}

/// The fleet AMI of this identity that is available or on its way, if any.
pub async fn find(ec2: &aws_sdk_ec2::Client, identity: &Identity) -> Result<Option<Image>> {
    let out = ec2
        .describe_images()
        .owners("self")
        .set_filters(Some(identity.filters()))
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeImages", &identity.to_string(), e))?;
    let mut images: Vec<Image> = out
        .images()
        .iter()
        .filter(|i| {
            matches!(i.state(), Some(ImageState::Available | ImageState::Pending)) && identity.matches(i.tags())
        })
        .cloned()
        .collect();
    sort_newest_first(&mut images);
    Ok(images.into_iter().next())
}

/// The newest *available* fleet AMI (a pending or failed newer one is not a
/// candidate), or the override after checking it exists, is available and
/// is a fleet AMI.
pub async fn latest(ec2: &aws_sdk_ec2::Client, override_id: Option<&str>) -> Result<Image> {
    if let Some(id) = override_id {
        let out =
            ec2.describe_images().image_ids(id).send().await.map_err(|e| aws::error("EC2 DescribeImages", id, e))?;
        let image = out.images().first().cloned().with_context(|| format!("AMI {id} does not exist in this region"))?;
        // A public or shared AMI of another account can carry any tag.
        let own = ec2.describe_images().image_ids(id).owners("self").send().await;
        if !own.is_ok_and(|o| !o.images().is_empty()) {
            let owner = image.owner_id().unwrap_or("?");
            bail!("AMI {id} belongs to account {owner}, not this one: refusing to deploy it (fleet AMIs are this account's own)");
        }
        if tag(&image, TAG_FLEET) != Some("true") {
            bail!("AMI {id} is not a fleet AMI (it lacks the tag {TAG_FLEET}=true): refusing to deploy it");
        }
        if !is_available(&image) {
            bail!("AMI {id} is {}, not available: refusing to deploy it", state(&image));
        }
        return Ok(image);
    }
    fleet_images(ec2).await?.into_iter().find(is_available).context(
        "no available fleet AMI (owner self, tag clawdinator=true) in this region: run `cargo xtask image publish` first",
    )
}

/// Who uses each AMI: every instance in any state but terminated (a
/// stopped one starts again from it) and every launch template version.
pub async fn usage(ec2: &aws_sdk_ec2::Client) -> Result<BTreeMap<String, Vec<String>>> {
    let mut used = instance_usage(ec2).await?;
    for (ami, template) in launch_template_usage(ec2).await? {
        used.entry(ami).or_default().push(template);
    }
    Ok(used)
}

/// (AMI, "launch template NAME version N") for every version of every template.
async fn launch_template_usage(ec2: &aws_sdk_ec2::Client) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    let mut pages = ec2.describe_launch_templates().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("EC2 DescribeLaunchTemplates", "", e))?;
        for template in page.launch_templates() {
            let id = template.launch_template_id().unwrap_or_default();
            let name = template.launch_template_name().unwrap_or(id);
            let versions = ec2
                .describe_launch_template_versions()
                .launch_template_id(id)
                .send()
                .await
                .map_err(|e| aws::error("EC2 DescribeLaunchTemplateVersions", id, e))?;
            for version in versions.launch_template_versions() {
                if let Some(ami) = version.launch_template_data().and_then(|d| d.image_id()) {
                    let number = version.version_number().unwrap_or_default();
                    found.push((ami.to_string(), format!("launch template {name} version {number}")));
                }
            }
        }
    }
    Ok(found)
}

/// Instance names (or ids) per AMI, for every instance not terminated.
async fn instance_usage(ec2: &aws_sdk_ec2::Client) -> Result<BTreeMap<String, Vec<String>>> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pages = ec2.describe_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("EC2 DescribeInstances", "", e))?;
        for reservation in page.reservations() {
            for instance in reservation.instances() {
                if instance.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated) {
                    continue;
                }
                let name = instance
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("Name"))
                    .and_then(|t| t.value())
                    .or(instance.instance_id())
                    .unwrap_or_default()
                    .to_string();
                if let Some(ami) = instance.image_id() {
                    used.entry(ami.to_string()).or_default().push(name);
                }
            }
        }
    }
    Ok(used)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmiRow {
    pub image_id: String,
    pub name: String,
    pub creation_date: String,
    pub sha256: String,
    pub revision: String,
    pub used_by: Vec<String>,
    pub snapshots: Vec<String>,
}

fn row(image: &Image, used: &BTreeMap<String, Vec<String>>) -> AmiRow {
    let id = image.image_id().unwrap_or_default().to_string();
    AmiRow {
        used_by: used.get(&id).cloned().unwrap_or_default(),
        snapshots: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect(),
        image_id: id,
        name: image.name().unwrap_or_default().to_string(),
        creation_date: image.creation_date().unwrap_or_default().to_string(),
        sha256: tag(image, TAG_SHA256).unwrap_or_default().to_string(),
        revision: tag(image, TAG_REVISION).unwrap_or_default().to_string(),
    }
}

#[derive(Debug, Serialize)]
pub struct AmiList {
    pub images: Vec<AmiRow>,
}

impl fmt::Display for AmiList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<22} {:<26} {:<14} {:<14} {:<14} used by", "AMI", "created", "sha256", "revision", "name")?;
        for r in &self.images {
            let short = |s: &str| s.chars().take(12).collect::<String>();
            writeln!(
                f,
                "{:<22} {:<26} {:<14} {:<14} {:<14} {}",
                r.image_id,
                r.creation_date,
                short(&r.sha256),
                short(&r.revision),
                r.name,
                if r.used_by.is_empty() { "-".to_string() } else { r.used_by.join(", ") }
            )?;
        }
        Ok(())
    }
}

pub async fn list(ec2: &aws_sdk_ec2::Client) -> Result<AmiList> {
    let used = usage(ec2).await?;
    Ok(AmiList { images: fleet_images(ec2).await?.iter().map(|i| row(i, &used)).collect() })
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub dry_run: bool,
    pub removed: Vec<AmiRow>,
    /// Kept, with the reason.
    pub kept: Vec<(String, String)>,
    /// Fleet snapshots no AMI uses (a publish that stopped early); deleted with `--orphans`.
    pub orphans: Vec<String>,
    pub orphans_deleted: bool,
    /// What could not be removed, with AWS's error; the rest went ahead.
    pub failures: Vec<(String, String)>,
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, why) in &self.kept {
            writeln!(f, "keep   {id}: {why}")?;
        }
        let verb = if self.dry_run { "would remove" } else { "removed" };
        for r in &self.removed {
            writeln!(f, "{verb} {} ({}) and snapshot(s) {}", r.image_id, r.name, r.snapshots.join(", "))?;
        }
        for id in &self.orphans {
            let fate = match (self.orphans_deleted, self.dry_run) {
                (true, true) => "would delete orphan snapshot",
                (true, false) => "deleted orphan snapshot",
                (false, _) => "orphan snapshot (no AMI uses it; --orphans deletes it)",
            };
            writeln!(f, "{fate} {id}")?;
        }
        for (id, error) in &self.failures {
            writeln!(f, "FAILED {id}: {error}")?;
        }
        writeln!(
            f,
            "image ami prune: {} {verb}, {} kept, {} orphan snapshot(s), {} failure(s)",
            self.removed.len(),
            self.kept.len(),
            self.orphans.len(),
            self.failures.len()
        )
    }
}

/// What `image ami prune` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    pub keep: usize,
    pub older_than_days: Option<u64>,
    pub orphans: bool,
    pub dry_run: bool,
    /// The revisions of the releases a rollback may return to: an AMI built
    /// for one of them stays, however many images were built since.
    pub releases: Vec<String>,
}

/// Why an AMI stays, if it does. `rank` counts available AMIs from the
/// newest (0 is the latest); None for one that is not available.
fn keep_reason(
    image: &Image,
    rank: Option<usize>,
    r: &AmiRow,
    opts: &PruneOptions,
    cutoff: Option<&str>,
) -> Option<String> {
    if rank == Some(0) {
        Some("the latest available fleet AMI".into())
    } else if rank.is_some_and(|n| n < opts.keep) {
        Some(format!("among the {} newest available", opts.keep))
    } else if !r.used_by.is_empty() {
        Some(format!("used by {}", r.used_by.join(", ")))
    } else if opts.releases.contains(&r.revision) {
        Some(format!("built for the kept release {}", r.revision))
    } else if image.state() == Some(&ImageState::Pending) {
        Some("still pending (a publish may be finishing it)".into())
    } else {
        cutoff.filter(|c| r.creation_date.as_str() > *c).map(|_| "newer than --older-than".to_string())
    }
}

/// Deregister older fleet AMIs and delete their snapshots. Never the newest
/// available one, never one an instance (in any state but terminated) or a
/// launch template uses, never one built for a kept release. A snapshot that cannot be deleted is reported and
/// the rest goes ahead.
pub async fn prune(ec2: &aws_sdk_ec2::Client, opts: &PruneOptions) -> Result<PruneReport> {
    let images = fleet_images(ec2).await?;
    let used = usage(ec2).await?;
    let cutoff = opts.older_than_days.map(|d| {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(d * 86_400);
        aws_smithy_types::DateTime::from(t).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default()
    });
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        removed: vec![],
        kept: vec![],
        orphans: orphan_snapshots(ec2, &images).await?,
        orphans_deleted: opts.orphans,
        failures: vec![],
    };
    let mut available = 0..;
    for image in &images {
        let r = row(image, &used);
        let rank = is_available(image).then(|| available.next().expect("unbounded"));
        match keep_reason(image, rank, &r, opts, cutoff.as_deref()) {
            Some(why) => report.kept.push((r.image_id.clone(), why)),
            None => report.removed.push(r),
        }
    }
    if opts.dry_run {
        return Ok(report);
    }
    for r in &report.removed {
        if let Err(e) = ec2.deregister_image().image_id(&r.image_id).send().await {
            report
                .failures
                .push((r.image_id.clone(), format!("{:#}", aws::error("EC2 DeregisterImage", &r.image_id, e))));
            continue;
        }
        for snapshot in &r.snapshots {
            delete_snapshot(ec2, snapshot, &mut report.failures).await;
        }
    }
    if opts.orphans {
        for snapshot in &report.orphans {
            delete_snapshot(ec2, snapshot, &mut report.failures).await;
        }
    }
    Ok(report)
}

async fn delete_snapshot(ec2: &aws_sdk_ec2::Client, snapshot: &str, failures: &mut Vec<(String, String)>) {
    if let Err(e) = super::snapshot::delete_snapshot(ec2, snapshot).await {
        failures.push((snapshot.to_string(), format!("{e:#}")));
    }
}

/// Completed fleet snapshots that no fleet AMI maps.
async fn orphan_snapshots(ec2: &aws_sdk_ec2::Client, images: &[Image]) -> Result<Vec<String>> {
    let mapped: std::collections::BTreeSet<&str> = images
        .iter()
        .flat_map(|i| i.block_device_mappings().iter().filter_map(|m| m.ebs().and_then(|e| e.snapshot_id())))
        .collect();
    let mut orphans = Vec::new();
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(filter(&format!("tag:{TAG_FLEET}"), "true"))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("EC2 DescribeSnapshots", "owner self, tag clawdinator=true", e))?;
        for snapshot in page.snapshots() {
            let completed = snapshot.state() == Some(&SnapshotState::Completed);
            match snapshot.snapshot_id() {
                Some(id) if completed && !mapped.contains(id) => orphans.push(id.to_string()),
                _ => {}
            }
        }
    }
    orphans.sort();
    Ok(orphans)
}

/// What `image ami latest` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestReport {
    pub image_id: String,
    pub name: String,
    pub creation_date: String,
}

impl fmt::Display for LatestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.image_id)
    }
}

impl AmiCmd {
    /// `image ami …`.
    pub(super) async fn run(self, ctx: &Ctx) -> Result<()> {
        let aws = ctx.aws().await?;
        match self {
            AmiCmd::Latest(args) => args.run(ctx, &aws.ec2()).await,
            AmiCmd::List => ctx.out.emit(&list(&aws.ec2()).await?),
            AmiCmd::Prune(args) => args.run(ctx, &aws).await,
        }
    }
}

impl AmiLatestArgs {
    /// `image ami latest`: the AMI's id, also to a workflow's output.
    async fn run(self, ctx: &Ctx, ec2: &aws_sdk_ec2::Client) -> Result<()> {
        let image = latest(ec2, self.r#override.as_deref()).await?;
        let report = LatestReport {
            image_id: image.image_id().unwrap_or_default().into(),
            name: image.name().unwrap_or_default().into(),
            creation_date: image.creation_date().unwrap_or_default().into(),
        };
        output::github_output("ami_id", &report.image_id)?;
        ctx.out.emit(&report)
    }
}

impl AmiPruneArgs {
    /// `image ami prune`, audited; fails when anything could not be removed.
    async fn run(self, ctx: &Ctx, aws: &Aws) -> Result<()> {
        let opts = self.options(&aws.s3()).await?;
        let entry =
            Entry { command: "image ami prune", targets: vec![format!("keep {}", opts.keep)], dry_run: opts.dry_run };
        let report = entry.record(ctx, aws, prune(&aws.ec2(), &opts)).await?;
        ctx.out.emit(&report)?;
        if !report.failures.is_empty() {
            bail!(
                "image ami prune could not remove {} resource(s) (listed above); the rest was removed",
                report.failures.len()
            );
        }
        Ok(())
    }

    /// What these flags ask of a prune, with the releases a rollback may need.
    async fn options(self, s3: &aws_sdk_s3::Client) -> Result<PruneOptions> {
        // No release list, no pruning: an AMI a release needs is never
        // removed for want of knowing it.
        let releases = crate::release::manifest::revisions(s3, &self.bucket)
            .await
            .with_context(|| format!("nothing pruned: cannot list the releases in s3://{}/", self.bucket))?;
        Ok(PruneOptions {
            keep: self.keep,
            older_than_days: self.older_than,
            orphans: self.orphans,
            dry_run: self.dry_run,
            releases: releases.into_iter().take(self.keep_releases).collect(),
        })
    }
}

/// What a prune removed, as the audit trail lists it: each AMI and its snapshots.
impl Audited for PruneReport {
    fn resources(&self) -> Vec<String> {
        self.removed.iter().flat_map(|a| std::iter::once(a.image_id.clone()).chain(a.snapshots.clone())).collect()
    }
}
