//! Fleet AMIs: their tags, `ami latest`, `ami list` and `ami prune`.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use aws_sdk_ec2::types::{Filter, Image, Tag};
use serde::Serialize;

use crate::image::ImageManifest;
use crate::{aws, flags, output, Ctx};

pub const TAG_FLEET: &str = "clawdinator";
pub const TAG_APP: &str = "app";
pub const TAG_SHA256: &str = "clawdinator:image-sha256";
pub const TAG_STORE_PATH: &str = "clawdinator:nix-store-path";
pub const TAG_REVISION: &str = "clawdinator:git-revision";
pub const TAG_MANAGED_BY: &str = "ManagedBy";
pub const MANAGED_BY: &str = "clawdinators-xtask";

/// The tags every fleet AMI and its snapshot carry.
pub fn fleet_tags(image: &ImageManifest) -> Vec<(String, String)> {
    let mut revision = image.source_revision.clone().unwrap_or_else(|| "unknown".into());
    if image.dirty {
        revision.push_str("-dirty");
    }
    vec![
        ("Name".into(), image.ami_name()),
        (TAG_FLEET.into(), "true".into()),
        (TAG_APP.into(), "clawdinator".into()),
        (TAG_SHA256.into(), image.sha256.clone()),
        (TAG_STORE_PATH.into(), image.store_path.clone()),
        (TAG_REVISION.into(), revision),
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

/// The fleet AMI built from the image with this SHA-256, if one exists.
pub async fn find_by_sha256(ec2: &aws_sdk_ec2::Client, sha256: &str) -> Result<Option<Image>> {
    let out = ec2
        .describe_images()
        .owners("self")
        .filters(filter(&format!("tag:{TAG_SHA256}"), sha256))
        .send()
        .await
        .map_err(|e| aws::error("EC2 DescribeImages", &format!("tag {TAG_SHA256}={sha256}"), e))?;
    let mut images: Vec<Image> = out
        .images()
        .iter()
        .filter(|i| matches!(i.state().map(|s| s.as_str()), Some("available") | Some("pending")))
        .cloned()
        .collect();
    sort_newest_first(&mut images);
    Ok(images.into_iter().next())
}

/// The newest fleet AMI, or the override after checking it is a fleet AMI.
pub async fn latest(ec2: &aws_sdk_ec2::Client, override_id: Option<&str>) -> Result<Image> {
    if let Some(id) = override_id {
        let out =
            ec2.describe_images().image_ids(id).send().await.map_err(|e| aws::error("EC2 DescribeImages", id, e))?;
        let image = out.images().first().cloned().with_context(|| format!("AMI {id} does not exist in this region"))?;
        if tag(&image, TAG_FLEET) != Some("true") {
            bail!("AMI {id} is not a fleet AMI (it lacks the tag {TAG_FLEET}=true): refusing to deploy it");
        }
        return Ok(image);
    }
    fleet_images(ec2).await?.into_iter().next().context(
        "no fleet AMI (owner self, tag clawdinator=true) in this region: run `cargo xtask image publish` first",
    )
}

/// Instance names (or ids) per AMI, for every instance not terminated.
pub async fn usage(ec2: &aws_sdk_ec2::Client) -> Result<BTreeMap<String, Vec<String>>> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pages = ec2.describe_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("EC2 DescribeInstances", "", e))?;
        for reservation in page.reservations() {
            for instance in reservation.instances() {
                let state = instance.state().and_then(|s| s.name()).map(|n| n.as_str()).unwrap_or_default();
                if state == "terminated" {
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
        writeln!(f, "ami prune: {} {verb}, {} kept", self.removed.len(), self.kept.len())
    }
}

/// Deregister older fleet AMIs and delete their snapshots. Never the newest,
/// never one that a non-terminated instance uses.
pub async fn prune(
    ec2: &aws_sdk_ec2::Client,
    keep: usize,
    older_than_days: Option<u64>,
    dry_run: bool,
) -> Result<PruneReport> {
    let images = fleet_images(ec2).await?;
    let used = usage(ec2).await?;
    let cutoff = older_than_days.map(|d| {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(d * 86_400);
        aws_smithy_types::DateTime::from(t).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default()
    });
    let mut report = PruneReport { dry_run, removed: vec![], kept: vec![] };
    for (position, image) in images.iter().enumerate() {
        let r = row(image, &used);
        let why = if position == 0 {
            Some("the latest fleet AMI".to_string())
        } else if position < keep {
            Some(format!("among the {keep} newest"))
        } else if !r.used_by.is_empty() {
            Some(format!("used by {}", r.used_by.join(", ")))
        } else {
            cutoff
                .as_ref()
                .filter(|c| r.creation_date.as_str() > c.as_str())
                .map(|_| "newer than --older-than".to_string())
        };
        match why {
            Some(why) => report.kept.push((r.image_id.clone(), why)),
            None => report.removed.push(r),
        }
    }
    if dry_run {
        return Ok(report);
    }
    for r in &report.removed {
        ec2.deregister_image()
            .image_id(&r.image_id)
            .send()
            .await
            .map_err(|e| aws::error("EC2 DeregisterImage", &r.image_id, e))?;
        for snapshot in &r.snapshots {
            ec2.delete_snapshot()
                .snapshot_id(snapshot)
                .send()
                .await
                .map_err(|e| aws::error("EC2 DeleteSnapshot", snapshot, e))?;
        }
    }
    Ok(report)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LatestReport {
    image_id: String,
    name: String,
    creation_date: String,
}

impl fmt::Display for LatestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.image_id)
    }
}

pub async fn run(ctx: &Ctx, cmd: flags::AmiCmd) -> Result<()> {
    let aws = ctx.aws().await?;
    let ec2 = aws.ec2();
    match cmd {
        flags::AmiCmd::Latest(args) => {
            let image = latest(&ec2, args.r#override.as_deref()).await?;
            let report = LatestReport {
                image_id: image.image_id().unwrap_or_default().into(),
                name: image.name().unwrap_or_default().into(),
                creation_date: image.creation_date().unwrap_or_default().into(),
            };
            output::github_output("ami_id", &report.image_id)?;
            ctx.out.emit(&report)
        }
        flags::AmiCmd::List => ctx.out.emit(&list(&ec2).await?),
        flags::AmiCmd::Prune(args) => ctx.out.emit(&prune(&ec2, args.keep, args.older_than, args.dry_run).await?),
    }
}
