//! `fleet status`: desired (the registry) against actual (EC2 instances
//! tagged `app=clawdinator`, by `Name`), with the drift listed by kind.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use aws_sdk_ec2::types::{Filter, InstanceStateName};
use aws_sdk_ssm::types::PingStatus;
use serde::Serialize;

use super::flags::{FleetCheckArgs, FleetStatusArgs};
use crate::aws::{self, Aws};
use crate::ctx::Ctx;
use crate::exit::{DriftFound, UsageError};
use crate::registry::Registry;

/// The tag `fleet switch` writes on an instance after switching it.
pub const TAG_DEPLOYED_REVISION: &str = "clawdinator:deployed-revision";
/// States of an instance that is there (terminated and shutting-down ones are gone).
pub const LIVE_STATES: [InstanceStateName; 4] =
    [InstanceStateName::Pending, InstanceStateName::Running, InstanceStateName::Stopping, InstanceStateName::Stopped];

/// One EC2 instance of the fleet as AWS reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LiveInstance {
    pub id: String,
    pub name: Option<String>,
    #[serde(serialize_with = "state_name")]
    pub state: InstanceStateName,
    pub instance_type: String,
    pub ami: String,
    pub launch_time: Option<String>,
    pub revision: Option<String>,
    pub ssm_online: bool,
}

/// An instance's state as AWS words it (`running`).
fn state_name<S: serde::Serializer>(state: &InstanceStateName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// The live fleet: every instance tagged app=clawdinator in a live state,
/// with its SSM agent's ping status.
pub async fn live_instances(aws: &Aws) -> Result<Vec<LiveInstance>> {
    let ec2 = aws.ec2();
    let mut instances = Vec::new();
    let mut pages = ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:app").values("clawdinator").build())
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(LIVE_STATES.map(|s| s.to_string()).to_vec()))
                .build(),
        )
        // Pages of 1,000, the most EC2 gives: a fleet of any size in few calls, none timing out.
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("EC2 DescribeInstances", "tag:app=clawdinator", e))?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            let tag = |key: &str| {
                instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(String::from)
            };
            instances.push(LiveInstance {
                id: instance.instance_id().unwrap_or_default().to_string(),
                name: tag("Name"),
                state: instance.state().and_then(|s| s.name()).cloned().unwrap_or_else(|| InstanceStateName::from("")),
                instance_type: instance.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
                ami: instance.image_id().unwrap_or_default().to_string(),
                launch_time: instance.launch_time().map(|t| t.to_string()),
                revision: tag(TAG_DEPLOYED_REVISION),
                ssm_online: false,
            });
        }
    }
    let running: Vec<String> =
        instances.iter().filter(|i| i.state == InstanceStateName::Running).map(|i| i.id.clone()).collect();
    let online = ssm_online(aws, &running).await?;
    for instance in &mut instances {
        instance.ssm_online = online.contains(&instance.id);
    }
    instances.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(instances)
}

/// The instances among `ids` whose SSM agent is online.
pub async fn ssm_online(aws: &Aws, ids: &[String]) -> Result<BTreeSet<String>> {
    let mut online = BTreeSet::new();
    for chunk in ids.chunks(50) {
        let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .set_values(Some(chunk.to_vec()))
            .build()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut pages = aws.ssm().describe_instance_information().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws::error("SSM DescribeInstanceInformation", "fleet instances", e))?;
            for info in page.instance_information_list() {
                if info.ping_status() == Some(&PingStatus::Online) {
                    online.extend(info.instance_id().map(String::from));
                }
            }
        }
    }
    Ok(online)
}

/// What differs between the registry and EC2.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Drift {
    /// A registry entry with no live instance.
    Missing { name: String },
    /// A live fleet instance whose name the registry lacks.
    Unknown { name: Option<String>, id: String },
    /// More than one live instance for one name.
    Duplicate { name: String, ids: Vec<String> },
    /// An instance not on the latest fleet AMI.
    StaleAmi { name: String, id: String, ami: String, latest: String },
    /// An instance of another type than the registry says.
    TypeMismatch { name: String, id: String, actual: String, registry: String },
    /// An instance at another revision than the fleet's.
    RevisionMismatch { name: String, id: String, revision: Option<String>, fleet: String },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Missing { name } => {
                write!(f, "missing: {name} is in the registry but has no instance (fleet deploy {name})")
            }
            Drift::Unknown { name, id } => {
                write!(
                    f,
                    "unknown: {id} ({}) is tagged app=clawdinator but not in the registry",
                    name.as_deref().unwrap_or("no Name")
                )
            }
            Drift::Duplicate { name, ids } => {
                write!(f, "duplicate: {name} has {} live instances: {}", ids.len(), ids.join(", "))
            }
            Drift::StaleAmi { name, id, ami, latest } => {
                write!(f, "stale AMI: {name} ({id}) runs {ami}, the latest is {latest}")
            }
            Drift::TypeMismatch { name, id, actual, registry } => {
                write!(f, "type: {name} ({id}) is {actual}, the registry says {registry}")
            }
            Drift::RevisionMismatch { name, id, revision, fleet } => write!(
                f,
                "revision: {name} ({id}) is at {}, the fleet at {fleet}",
                revision.as_deref().unwrap_or("no recorded revision")
            ),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub latest_ami: Option<String>,
    /// The revision most instances run (the one `fleet switch` rolled out), or the one asked for.
    pub fleet_revision: Option<String>,
    pub instances: Vec<LiveInstance>,
    pub drift: Vec<Drift>,
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<16} {:<20} {:<9} {:<10} {:<22} {:<9} {:<12} SSM",
            "NAME", "INSTANCE", "STATE", "TYPE", "AMI", "REVISION", "LAUNCHED"
        )?;
        for i in &self.instances {
            let latest = if self.latest_ami.as_deref() == Some(i.ami.as_str()) { "*" } else { " " };
            writeln!(
                f,
                "{:<16} {:<20} {:<9} {:<10} {:<22} {:<9} {:<12} {}",
                i.name.as_deref().unwrap_or("-"),
                i.id,
                i.state.as_str(),
                i.instance_type,
                format!("{}{latest}", i.ami),
                i.revision.as_deref().map(|r| &r[..r.len().min(8)]).unwrap_or("-"),
                i.launch_time.as_deref().map(|t| &t[..t.len().min(10)]).unwrap_or("-"),
                if i.ssm_online { "online" } else { "offline" }
            )?;
        }
        writeln!(f, "(* the latest fleet AMI: {})", self.latest_ami.as_deref().unwrap_or("none"))?;
        if self.drift.is_empty() {
            writeln!(f, "in sync with the registry")
        } else {
            writeln!(f, "drift ({}):", self.drift.len())?;
            self.drift.iter().try_for_each(|d| writeln!(f, "  {d}"))
        }
    }
}

/// The revision most instances carry (ties: the first instance's in registry order).
fn majority_revision(registry: &Registry, live: &[LiveInstance]) -> Option<String> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let order: Vec<&String> = registry.instances.keys().collect();
    for i in live {
        if let (Some(rev), Some(name)) = (&i.revision, &i.name) {
            let rank = order.iter().position(|n| *n == name).unwrap_or(usize::MAX);
            let entry = counts.entry(rev).or_insert((0, rank));
            entry.0 += 1;
            entry.1 = entry.1.min(rank);
        }
    }
    counts.into_iter().max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1))).map(|(rev, _)| rev.to_string())
}

/// Compare; pure, so every drift kind is tested without AWS.
pub fn compare(
    registry: &Registry,
    live: Vec<LiveInstance>,
    latest_ami: Option<String>,
    revision: Option<String>,
) -> StatusReport {
    let fleet_revision = revision.or_else(|| majority_revision(registry, &live));
    let mut drift = Vec::new();
    let mut by_name: BTreeMap<&str, Vec<&LiveInstance>> = BTreeMap::new();
    for i in &live {
        match i.name.as_deref().filter(|n| registry.instances.contains_key(*n)) {
            Some(name) => by_name.entry(name).or_default().push(i),
            None => drift.push(Drift::Unknown { name: i.name.clone(), id: i.id.clone() }),
        }
    }
    for (name, entry) in &registry.instances {
        let Some(found) = by_name.get(name.as_str()) else {
            drift.push(Drift::Missing { name: name.clone() });
            continue;
        };
        if found.len() > 1 {
            drift.push(Drift::Duplicate { name: name.clone(), ids: found.iter().map(|i| i.id.clone()).collect() });
        }
        for i in found {
            let (name, id) = (name.clone(), i.id.clone());
            if let Some(latest) = latest_ami.as_ref().filter(|l| **l != i.ami) {
                drift.push(Drift::StaleAmi {
                    name: name.clone(),
                    id: id.clone(),
                    ami: i.ami.clone(),
                    latest: latest.clone(),
                });
            }
            if i.instance_type != entry.instance_type {
                let (actual, registry) = (i.instance_type.clone(), entry.instance_type.clone());
                drift.push(Drift::TypeMismatch { name: name.clone(), id: id.clone(), actual, registry });
            }
            if let Some(fleet) = fleet_revision.as_ref().filter(|f| i.revision.as_ref() != Some(*f)) {
                drift.push(Drift::RevisionMismatch { name, id, revision: i.revision.clone(), fleet: fleet.clone() });
            }
        }
    }
    drift.sort();
    StatusReport { latest_ami, fleet_revision, instances: live, drift }
}

/// The whole status against AWS.
pub async fn status(aws: &Aws, registry: &Registry, revision: Option<String>) -> Result<StatusReport> {
    let live = live_instances(aws).await?;
    // No fleet AMI yet: nothing can be stale.
    let images = crate::image::ami::fleet_images(&aws.ec2()).await?;
    let latest =
        images.iter().find(|i| crate::image::ami::state(i) == "available").and_then(|i| i.image_id()).map(String::from);
    Ok(compare(registry, live, latest, revision))
}

impl FleetCheckArgs {
    /// `fleet check`: the registry alone, every problem at once.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let path = &self.instances.path;
        let report = crate::registry::check_file(&crate::project::resolve(path), &path.display().to_string());
        ctx.out.emit(&report)?;
        if !report.ok {
            bail!("the fleet registry {} is not valid", path.display());
        }
        Ok(())
    }
}

impl FleetStatusArgs {
    /// `fleet status`: the registry against EC2; drift is exit 3.
    pub async fn run(self, ctx: &Ctx) -> Result<()> {
        if let Some(rev) = &self.revision {
            crate::release::manifest::check_revision(rev).map_err(|e| UsageError(format!("--revision: {e}")))?;
        }
        let registry = Registry::given(&self.instances)?;
        let report = status(&ctx.aws().await?, &registry, self.revision).await?;
        ctx.out.emit(&report)?;
        if !report.drift.is_empty() {
            bail!(DriftFound(report.drift.len()));
        }
        Ok(())
    }
}
