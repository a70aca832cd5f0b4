//! `host publish-tree`: a public-safe tree of shared memory (the PR-intent
//! memos of one skill version, `/memory/pr-intent/v1`) mirrored under one
//! prefix of the public bucket (`v1/`): the keys are the original fleet's,
//! `v1/<owner>-<repo>/<N>.txt` and `.meta.json` at the top of the bucket,
//! where `aws s3 sync --no-sign-request s3://<bucket>/v1/ …` finds them.
//! A file whose SHA-256 the bucket already records is not sent again; an
//! object under the prefix whose file is gone is deleted, after every
//! upload (a reader never misses a file being replaced); nothing outside
//! the prefix is touched. The agents write the tree while this
//! runs, so nothing in it is trusted to stay what the walk saw: each level
//! is opened from its parent without following a link, each file is opened
//! without following a link and without blocking, and only a handle that is
//! a regular file is read. A link (it could point at a secret), a FIFO (it
//! would hang the run) or anything else is left out and named.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use crate::aws::s3::{self, Body};
use crate::aws::{self as aws_mod, Aws};
use crate::ctx::Ctx;
use rustix::fs::{openat, statat, AtFlags, Dir, FileType, Mode, OFlags};

use super::flags::PublishTreeArgs;
pub use super::flags::{DEFAULT_FROM, DEFAULT_PREFIX};

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

/// The tree, walked by handle: each directory is opened from its parent
/// without following a link, so a directory the agents swap for a link
/// mid-walk leads nowhere outside the tree.
struct Tree {
    dirs: Vec<OwnedFd>,
    /// Each regular file by relative name: its directory (an index into
    /// `dirs`) and its name there.
    files: BTreeMap<String, (usize, OsString)>,
    /// Links and other non-files, by path, left out.
    skipped: Vec<String>,
}

fn local_tree(root: &Path) -> Result<Tree> {
    let mut tree =
        Tree { dirs: vec![crate::atomic::open_dir_nofollow(root, false)?], files: BTreeMap::new(), skipped: vec![] };
    let mut todo = vec![(0, String::new())];
    while let Some((index, prefix)) = todo.pop() {
        let at = root.join(&prefix);
        let entries = Dir::read_from(&tree.dirs[index]).with_context(|| format!("cannot read {}", at.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", at.display()))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            if name == "." || name == ".." {
                continue;
            }
            let rel = name.to_str().map(|n| format!("{prefix}{n}"));
            let kind =
                statat(&tree.dirs[index], &name, AtFlags::SYMLINK_NOFOLLOW).map(|s| FileType::from_raw_mode(s.st_mode));
            match (kind, rel) {
                (Ok(FileType::Directory), Some(rel)) => {
                    match openat(&tree.dirs[index], &name, DIR_FLAGS, Mode::empty()) {
                        Ok(fd) => {
                            tree.dirs.push(fd);
                            todo.push((tree.dirs.len() - 1, format!("{rel}/")));
                        }
                        Err(_) => tree.skipped.push(at.join(&name).display().to_string()),
                    }
                }
                (Ok(FileType::RegularFile), Some(rel)) => {
                    tree.files.insert(rel, (index, name));
                }
                _ => tree.skipped.push(at.join(&name).display().to_string()),
            }
        }
    }
    tree.skipped.sort();
    Ok(tree)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

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

/// A file's bytes, read once through a handle opened in its directory
/// without following a link and without blocking: a file swapped after the
/// walk for a link (to a secret) or a FIFO (which would hang the run) is
/// refused (`None`) by what the handle is, and what is hashed is what is sent.
fn read_regular_at(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match crate::atomic::open_regular_at(dir.as_fd(), name)
        .with_context(|| format!("cannot open {}", shown.display()))?
    {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let len = file.metadata()?.len();
    ensure!(len <= FILE_LIMIT, "{} is over {FILE_LIMIT} bytes: not published", shown.display());
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(FILE_LIMIT + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", shown.display()))?;
    ensure!(bytes.len() as u64 <= FILE_LIMIT, "{} grew past {FILE_LIMIT} bytes while read", shown.display());
    Ok(Some(bytes))
}

/// `path` read as publish-tree reads a file of the tree: `None` when it is
/// a link or not a regular file (a link at any level is never followed).
pub fn read_regular(path: &Path) -> Result<Option<Vec<u8>>> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    read_regular_at(&crate::atomic::open_dir_nofollow(parent, false)?, name, path)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("json") => "application/json",
        Some("md") => "text/markdown; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Mirror the tree; see the module comment.
pub async fn publish(aws: &Aws, opts: &PublishOptions) -> Result<PublishReport> {
    check_prefix(&opts.prefix)?;
    let tree = local_tree(&opts.from)?;
    let remote = remote_tree(aws, &opts.bucket, &opts.prefix).await?;
    let mut report = PublishReport {
        bucket: opts.bucket.clone(),
        prefix: opts.prefix.clone(),
        dry_run: opts.dry_run,
        objects: BTreeMap::new(),
        skipped: vec![],
    };
    upload_changed(aws, opts, &tree, &remote, &mut report).await?;
    report.skipped.extend(tree.skipped);
    delete_gone(aws, opts, &remote, &mut report).await?;
    report.skipped.sort();
    Ok(report)
}

/// Every file of the tree the bucket lacks or holds otherwise, sent.
async fn upload_changed(
    aws: &Aws,
    opts: &PublishOptions,
    tree: &Tree,
    remote: &BTreeMap<String, i64>,
    report: &mut PublishReport,
) -> Result<()> {
    let (s3c, bucket) = (aws.s3(), opts.bucket.as_str());
    for (rel, (dir, name)) in &tree.files {
        let key = format!("{}{rel}", opts.prefix);
        let shown = opts.from.join(rel);
        let Some(bytes) = read_regular_at(&tree.dirs[*dir], name, &shown)? else {
            // Swapped since the walk: left out like a link found by it (its object goes).
            report.skipped.push(shown.display().to_string());
            continue;
        };
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
    Ok(())
}

/// Every object under the prefix whose file is gone, deleted (after every upload).
async fn delete_gone(
    aws: &Aws,
    opts: &PublishOptions,
    remote: &BTreeMap<String, i64>,
    report: &mut PublishReport,
) -> Result<()> {
    let (s3c, bucket) = (aws.s3(), opts.bucket.as_str());
    let published: BTreeSet<String> = report.objects.keys().cloned().collect();
    for rel in remote.keys().filter(|rel| !published.contains(&format!("{}{rel}", opts.prefix))) {
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
    Ok(())
}

impl PublishTreeArgs {
    /// `host publish-tree`.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = PublishOptions { from: self.from, bucket: self.bucket, prefix: self.prefix, dry_run: self.dry_run };
        let work = async { publish(&ctx.aws().await?, &opts).await };
        ctx.out.emit(&tokio::runtime::Handle::current().block_on(work)?)
    }
}
