//! `host publish-tree`: a public-safe tree of shared memory (the PR-intent
//! data, `/memory/pr-intent`) mirrored under one prefix of the public
//! bucket. A file whose SHA-256 the bucket already records is not sent
//! again; an object under the prefix whose file is gone is deleted, after
//! every upload (a reader never misses a file being replaced); nothing
//! outside the prefix is touched. Links are never followed: a link in the
//! tree could point at a secret, so it is left out and named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use crate::aws::s3::{self, Body};
use crate::aws::{self as aws_mod, Aws};

pub struct PublishOptions {
    pub from: PathBuf,
    pub bucket: String,
    /// Ends with `/`, never empty: the only part of the bucket written.
    pub prefix: String,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Uploaded,
    Unchanged,
    Deleted,
    WouldUpload,
    WouldDelete,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReport {
    pub bucket: String,
    pub prefix: String,
    pub dry_run: bool,
    pub objects: BTreeMap<String, Action>,
    /// Links and other non-files in the tree, left out.
    pub skipped: Vec<String>,
}

impl std::fmt::Display for PublishReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |a: Action| self.objects.values().filter(|x| **x == a).count();
        for (key, action) in self.objects.iter().filter(|(_, a)| **a != Action::Unchanged) {
            writeln!(f, "{action:?}: {}", s3::url(&self.bucket, key))?;
        }
        for path in &self.skipped {
            writeln!(f, "left out (not a regular file): {path}")?;
        }
        let (up, del) = if self.dry_run {
            (count(Action::WouldUpload), count(Action::WouldDelete))
        } else {
            (count(Action::Uploaded), count(Action::Deleted))
        };
        let lead = if self.dry_run { "would publish" } else { "published" };
        writeln!(
            f,
            "{lead} s3://{}/{}: {up} uploaded, {del} deleted, {} unchanged",
            self.bucket,
            self.prefix,
            count(Action::Unchanged)
        )
    }
}

pub fn check_prefix(prefix: &str) -> Result<()> {
    ensure!(
        prefix.len() > 1 && prefix.ends_with('/') && !prefix.starts_with('/') && !prefix.split('/').any(|p| p == ".."),
        "--prefix {prefix:?}: a non-empty key prefix ending with / (everything under it is mirrored, and deleted when gone)"
    );
    Ok(())
}

/// The tree's regular files by relative name, and what was left out.
fn local_tree(root: &Path) -> Result<(BTreeMap<String, PathBuf>, Vec<String>)> {
    let (mut files, mut skipped, mut dirs) = (BTreeMap::new(), Vec::new(), vec![root.to_path_buf()]);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let path = entry?.path();
            let kind = std::fs::symlink_metadata(&path)?.file_type();
            let rel = path.strip_prefix(root)?.to_str().map(str::to_string);
            match (kind.is_dir(), kind.is_file(), rel) {
                (true, _, Some(_)) => dirs.push(path),
                (false, true, Some(rel)) => {
                    files.insert(rel, path);
                }
                _ => skipped.push(path.display().to_string()),
            }
        }
    }
    skipped.sort();
    Ok((files, skipped))
}

/// Every object under the prefix, by name below it, with its size.
async fn remote_tree(aws: &Aws, bucket: &str, prefix: &str) -> Result<BTreeMap<String, i64>> {
    let mut found = BTreeMap::new();
    let mut pages = aws.s3().list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_mod::error("S3 ListObjectsV2", &s3::url(bucket, prefix), e))?;
        for object in page.contents() {
            if let Some(rel) = object.key().and_then(|k| k.strip_prefix(prefix)) {
                found.insert(rel.to_string(), object.size().unwrap_or(-1));
            }
        }
    }
    Ok(found)
}

/// A published file is a memo, not a dataset dump: anything larger is refused.
const FILE_LIMIT: u64 = 16 << 20;

/// A file's bytes, read once through a handle opened without following a
/// link: one swapped in for the file after the walk (pointing at a secret)
/// is refused, and what is hashed is what is sent.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open {} (a link is never followed)", path.display()))?;
    let meta = file.metadata()?;
    ensure!(meta.is_file(), "{} is not a regular file: left out", path.display());
    ensure!(meta.len() <= FILE_LIMIT, "{} is over {FILE_LIMIT} bytes: not published", path.display());
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    ensure!(bytes.len() as u64 <= FILE_LIMIT, "{} grew past {FILE_LIMIT} bytes while read", path.display());
    Ok(bytes)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("json") => "application/json",
        Some("md") => "text/markdown; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

pub async fn publish(aws: &Aws, opts: &PublishOptions) -> Result<PublishReport> {
    check_prefix(&opts.prefix)?;
    let (files, skipped) = local_tree(&opts.from)?;
    let remote = remote_tree(aws, &opts.bucket, &opts.prefix).await?;
    let (s3c, bucket) = (aws.s3(), opts.bucket.as_str());
    let mut report = PublishReport {
        bucket: opts.bucket.clone(),
        prefix: opts.prefix.clone(),
        dry_run: opts.dry_run,
        objects: BTreeMap::new(),
        skipped,
    };
    for (rel, path) in &files {
        let key = format!("{}{rel}", opts.prefix);
        let bytes = read_regular(path)?;
        let sha = crate::digest::sha256_hex(&bytes);
        let same_size = remote.get(rel).is_some_and(|s| *s == bytes.len() as i64);
        let unchanged = same_size && s3::head_sha256(&s3c, bucket, &key).await?.as_deref() == Some(sha.as_str());
        let action = match (unchanged, opts.dry_run) {
            (true, _) => Action::Unchanged,
            (false, true) => Action::WouldUpload,
            (false, false) => {
                s3::put(&s3c, bucket, &key, Body::Bytes(&bytes), &sha, content_type(rel)).await?;
                Action::Uploaded
            }
        };
        report.objects.insert(key, action);
    }
    for rel in remote.keys().filter(|rel| !files.contains_key(*rel)) {
        let key = format!("{}{rel}", opts.prefix);
        if !opts.dry_run {
            s3c.delete_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| aws_mod::error("S3 DeleteObject", &s3::url(bucket, &key), e))?;
        }
        report.objects.insert(key, if opts.dry_run { Action::WouldDelete } else { Action::Deleted });
    }
    Ok(report)
}
