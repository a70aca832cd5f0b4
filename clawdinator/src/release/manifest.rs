//! Release manifests: `releases/<rev>.json` in the fleet bucket, one per
//! revision, written once (`If-None-Match: *`) by `release build`, read by
//! `fleet switch` (a revision's store paths) and by a host's first switch
//! and self-update (the newest release).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::aws::{self, s3};
use crate::build_info::Input;

/// Where the manifests are kept in the fleet bucket.
pub const PREFIX: &str = "releases/";
/// A manifest is small: a line per host.
const LIMIT: u64 = 1 << 20;
const STALL: Duration = Duration::from_secs(30);

/// What one revision of the fleet is: each host's system in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    pub revision: String,
    /// Instance name to its system's store path.
    pub hosts: BTreeMap<String, String>,
    /// The gateway's pin (flake.lock's nix-openclaw) at this revision.
    pub nix_openclaw: Option<Input>,
    /// The cache the closures were copied to (no key in it).
    pub cache: String,
    /// When, RFC 3339, and by which run.
    pub created_at: String,
    pub run: String,
}

impl Release {
    /// This host's system, or an error saying why a switch cannot go on.
    pub fn system_of(&self, instance: &str) -> Result<&str> {
        self.hosts.get(instance).map(String::as_str).with_context(|| {
            format!(
                "release {} names no system for {instance}: it was built before {instance} joined the registry; \
                 run `cargo xtask release build` at a newer revision",
                self.revision
            )
        })
    }
}

/// A full git revision: 40 lowercase hex digits (nothing a shell or a key could read otherwise).
pub fn check_revision(rev: &str) -> Result<()> {
    ensure!(
        rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "\"{rev}\" is not a full git revision (40 lowercase hex digits)"
    );
    Ok(())
}

pub fn key(revision: &str) -> String {
    format!("{PREFIX}{revision}.json")
}

/// A NixOS system's store path, and nothing a shell or nix could read
/// otherwise: `/nix/store/<32 nix-base32 chars>-nixos-system-<name>`.
/// The switch SSM document's allowedPattern says the same.
pub fn check_system_path(path: &str) -> Result<()> {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let ok = path.strip_prefix("/nix/store/").is_some_and(|rest| {
        let (hash, name) = rest.split_at(rest.len().min(32));
        hash.len() == 32
            && hash.bytes().all(|b| NIX32.contains(&b))
            && name
                .strip_prefix("-nixos-system-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)))
    });
    ensure!(ok, "{path:?} is not a NixOS system's store path (/nix/store/<hash>-nixos-system-<name>)");
    Ok(())
}

/// What writing a manifest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Written {
    Created,
    /// An earlier run wrote the same hosts' systems: left as it was.
    Kept,
    WouldCreate,
}

/// Write the manifest once. When the key exists already, it is kept if it
/// names the same systems, and is an error otherwise (a revision builds to
/// one closure; a different one means an input was not pinned).
pub async fn write_once(s3c: &aws_sdk_s3::Client, bucket: &str, release: &Release) -> Result<Written> {
    let key = key(&release.revision);
    let body = serde_json::to_vec_pretty(release)?;
    let request = || {
        s3c.put_object()
            .bucket(bucket)
            .key(&key)
            .content_type("application/json")
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .tagging("app=clawdinator")
            .body(body.clone().into())
    };
    if s3::put_once(&s3::url(bucket, &key), request).await? == s3::Once::Created {
        return Ok(Written::Created);
    }
    let earlier = read(s3c, bucket, &release.revision).await?;
    ensure!(
        earlier.hosts == release.hosts,
        "{} exists with other store paths than this build's: a revision must build to one system per host \
         (is an input unpinned?); it is never overwritten",
        s3::url(bucket, &key)
    );
    Ok(Written::Kept)
}

/// The manifest of one revision.
pub async fn read(s3c: &aws_sdk_s3::Client, bucket: &str, revision: &str) -> Result<Release> {
    let key = key(revision);
    let url = s3::url(bucket, &key);
    let Some(bytes) = s3::get_bytes(s3c, bucket, &key, LIMIT, STALL).await? else {
        bail!("{url} does not exist: no release was built for {revision} (`cargo xtask release build` makes it)");
    };
    let release: Release =
        serde_json::from_slice(&bytes).with_context(|| format!("{url} is not a release manifest"))?;
    ensure!(release.revision == revision, "{url} is the manifest of {}, not {revision}", release.revision);
    for path in release.hosts.values() {
        check_system_path(path).with_context(|| url.clone())?;
    }
    Ok(release)
}

/// The revisions of the bucket's manifests, newest first (by the time S3
/// stored them; a tie by revision, so the order is the same every time).
pub async fn revisions(s3c: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<String>> {
    let mut found: Vec<(aws_sdk_s3::primitives::DateTime, String)> = Vec::new();
    let mut pages = s3c.list_objects_v2().bucket(bucket).prefix(PREFIX).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("S3 ListObjectsV2", &s3::url(bucket, PREFIX), e))?;
        for object in page.contents() {
            let (Some(key), Some(at)) = (object.key(), object.last_modified()) else { continue };
            if let Some(revision) = key.strip_prefix(PREFIX).and_then(|k| k.strip_suffix(".json")) {
                found.push((*at, revision.to_string()));
            }
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    Ok(found.into_iter().map(|(_, revision)| revision).collect())
}

/// The newest manifest in the bucket (by the time S3 stored it).
pub async fn newest(s3c: &aws_sdk_s3::Client, bucket: &str) -> Result<Release> {
    let revisions = revisions(s3c, bucket).await?;
    let revision = revisions.first().with_context(|| {
        format!("{} holds no release: the release lane has not built one yet", s3::url(bucket, PREFIX))
    })?;
    read(s3c, bucket, revision).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_nixos_systems_store_path_passes() {
        check_system_path(
            "/nix/store/bq0c44z6kdq3nqkfczxf025vx11p48rz-nixos-system-clawdinator-1-26.05.20260102.16c7794",
        )
        .unwrap();
        for bad in [
            "/nix/store/bq0c44z6kdq3nqkfczxf025vx11p48rz-hello-2.12",
            "/nix/store/bq0c44z6kdq3nqkfczxf025vx11p48r-nixos-system-x",
            "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-nixos-system-x",
            "/nix/store/bq0c44z6kdq3nqkfczxf025vx11p48rz-nixos-system-",
            "/nix/store/bq0c44z6kdq3nqkfczxf025vx11p48rz-nixos-system-x;reboot",
            "/nix/store/bq0c44z6kdq3nqkfczxf025vx11p48rz-nixos-system-x/../../etc",
            "/tmp/bq0c44z6kdq3nqkfczxf025vx11p48rz-nixos-system-x",
            "$(reboot)",
            "",
        ] {
            assert!(check_system_path(bad).is_err(), "{bad}");
        }
    }
}
