//! The trail itself: records, their chain, the local log and its S3 copies.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::writers;
use crate::aws::{self, Aws};
use crate::ctx::Ctx;

/// Where the records go, from the current directory.
pub const DEFAULT_LOG: &str = ".clawdinators/audit.jsonl";
/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub time: String,
    /// Who AWS says ran it (STS GetCallerIdentity).
    pub caller: String,
    pub command: String,
    /// The command line after the program name (no secret is ever on it).
    pub args: Vec<String>,
    pub targets: Vec<String>,
    /// `started` or `finished`.
    pub phase: String,
    /// `ok`, or `failed: …` (finished records only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// SHA-256 of the previous line.
    pub prev: String,
}

pub fn hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Where a command's records go.
#[derive(Debug, Clone)]
pub struct Trail {
    pub log: PathBuf,
    pub bucket: Option<String>,
}

impl Trail {
    /// From the global flags; `--local` keeps its records in a throwaway place.
    pub fn of(ctx: &Ctx) -> Trail {
        let log = match (&ctx.global.audit_log, ctx.local_dir()) {
            (Some(log), _) => log.clone(),
            (None, Some(dir)) => dir.join("audit.jsonl"),
            (None, None) => PathBuf::from(DEFAULT_LOG),
        };
        Trail { log, bucket: ctx.global.audit_bucket.clone() }
    }

    /// Append one record under an exclusive lock on the log, chained to the
    /// last line; then copy it to S3 if a bucket is set. Returns its hash.
    pub async fn append(&self, aws: &Aws, mut record: Record) -> Result<String> {
        let line = tokio::task::block_in_place(|| -> Result<String> {
            if let Some(dir) = self.log.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.log)
                .with_context(|| format!("cannot open the audit log {}", self.log.display()))?;
            // Released when the file closes.
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .with_context(|| format!("cannot lock {}", self.log.display()))?;
            let text = std::fs::read_to_string(&self.log)?;
            record.prev = text.lines().last().map(hash).unwrap_or_else(|| GENESIS.to_string());
            let line = serde_json::to_string(&record)?;
            writeln!(file, "{line}")?;
            file.sync_all()?;
            Ok(line)
        })
        .with_context(|| format!("cannot write the audit log {}", self.log.display()))?;
        match &self.bucket {
            Some(bucket) => put_copy(aws, bucket, writers::prefix_for(&record.caller), &record.time, line).await,
            None => Ok(hash(&line)),
        }
    }
}

/// Write one record's line to S3, once ([`aws::s3::put_once`]): nothing
/// there is ever replaced. The key taken with the same bytes stored is this
/// write's own earlier attempt (its response was lost and the SDK retried),
/// so it counts as written.
async fn put_copy(aws: &Aws, bucket: &str, prefix: &str, time: &str, line: String) -> Result<String> {
    let digest = hash(&line);
    let key = s3_key(prefix, time, &digest);
    let s3 = aws.s3();
    let request = || {
        s3.put_object().bucket(bucket).key(&key).content_type("application/json").body(line.clone().into_bytes().into())
    };
    if aws::s3::put_once(&aws::s3::url(bucket, &key), request).await? == aws::s3::Once::Exists {
        ensure_stored(aws, bucket, &key, &line).await?;
    }
    Ok(digest)
}

/// The copy at `key` holds exactly `line`, or an error naming it.
async fn ensure_stored(aws: &Aws, bucket: &str, key: &str, line: &str) -> Result<()> {
    let url = aws::s3::url(bucket, key);
    let stored = aws::s3::get_bytes(&aws.s3(), bucket, key, 1 << 20, std::time::Duration::from_secs(30))
        .await
        .with_context(|| format!("{url} answered 412 (it exists) to the audit copy; reading it back"))?;
    ensure!(
        stored.as_deref() == Some(line.as_bytes()),
        "{url} exists with other content; audit copies are never overwritten \
         (`audit verify` checks the copies in the bucket)"
    );
    Ok(())
}

/// A chain kept only in S3, for a writer with no log of its own (a control
/// API container). Appends are serialized; a write whose outcome is unknown
/// (it failed, but S3 may have stored it) ends the chain, and the next
/// record starts a new one at [`GENESIS`], so no record ever gets two
/// successors.
pub struct BucketChain {
    bucket: String,
    prefix: String,
    last: tokio::sync::Mutex<String>,
}

impl BucketChain {
    /// A chain under `audit/<writer>/`, the one place the writer's role may write.
    pub fn new(bucket: &str, writer: &str) -> BucketChain {
        BucketChain {
            bucket: bucket.to_string(),
            prefix: format!("{PREFIX}{writer}/"),
            last: tokio::sync::Mutex::new(GENESIS.to_string()),
        }
    }

    /// Chain `record` to the last one this writer wrote and store it; its hash.
    pub async fn append(&self, aws: &Aws, mut record: Record) -> Result<String> {
        let mut last = self.last.lock().await;
        record.prev = last.clone();
        let line = serde_json::to_string(&record)?;
        match put_copy(aws, &self.bucket, &self.prefix, &record.time, line).await {
            Ok(digest) => {
                *last = digest.clone();
                Ok(digest)
            }
            Err(err) => {
                *last = GENESIS.to_string();
                Err(err)
            }
        }
    }
}

pub use super::writers::PREFIX;

/// `<prefix><yyyy>/<mm>/<dd>/<timestamp>-<hash>.json`: keys sort by time.
pub fn s3_key(prefix: &str, time: &str, digest: &str) -> String {
    let compact: String = time.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
    format!("{prefix}{}/{}/{}/{compact}-{digest}.json", &time[0..4], &time[5..7], &time[8..10])
}

/// What a command works on for its record: the instances named, or `all`.
pub fn targets(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        vec!["all".into()]
    } else {
        names.to_vec()
    }
}

/// What a command records: its name, what it works on, and whether it is
/// a dry run (which changes nothing and records nothing).
pub struct Entry<'a> {
    pub command: &'a str,
    pub targets: Vec<String>,
    pub dry_run: bool,
}

/// Record a command around `work`: `started` first (a failure to record
/// stops the command before it changes anything), `finished` after, with
/// the result and the resources `resources` names.
pub(super) async fn around<T, F>(
    ctx: &Ctx,
    aws: &Aws,
    entry: Entry<'_>,
    work: F,
    resources: impl Fn(&T) -> Vec<String>,
) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    if entry.dry_run {
        return work.await;
    }
    let Entry { command, targets, .. } = entry;
    let trail = Trail::of(ctx);
    let caller =
        aws.caller_arn().await.context("the audit trail needs the caller's identity (STS GetCallerIdentity)")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let record = |phase: &str, result: Option<String>, resources: Vec<String>| Record {
        time: crate::clock::now_precise(),
        caller: caller.clone(),
        command: command.to_string(),
        args: args.clone(),
        targets: targets.clone(),
        phase: phase.to_string(),
        result,
        resources,
        prev: String::new(),
    };
    trail
        .append(aws, record("started", None, vec![]))
        .await
        .context("cannot write the audit record; nothing was changed")?;
    let outcome = work.await;
    let (result, made) = match &outcome {
        Ok(value) => ("ok".to_string(), resources(value)),
        Err(err) => (format!("failed: {err:#}"), vec![]),
    };
    let finished = trail.append(aws, record("finished", Some(result), made)).await;
    match (outcome, finished) {
        (Ok(value), Ok(_)) => Ok(value),
        (Ok(_), Err(err)) => Err(err.context("the command succeeded but its audit record could not be written")),
        (Err(err), _) => Err(err),
    }
}

// ---------------------------------------------------------------- verify

/// The first broken link of a chain of lines, or how many records it holds.
pub fn verify_lines(source: &str, lines: &[String]) -> Result<usize> {
    let mut prev = GENESIS.to_string();
    for (n, line) in lines.iter().enumerate() {
        let record: Record = serde_json::from_str(line)
            .with_context(|| format!("{source}: record {} is not an audit record: the chain is broken there", n + 1))?;
        if record.prev != prev {
            bail!(
                "{source}: the chain breaks at record {} ({} {} at {}): it names a previous record that is not the one before it (edited, removed or reordered)",
                n + 1,
                record.command,
                record.phase,
                record.time
            );
        }
        prev = hash(line);
    }
    Ok(lines.len())
}

/// How many records and chains a set of S3 copies holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Chains {
    pub records: usize,
    pub chains: usize,
}

/// Check lines from many writers as a set of chains: each parses, each
/// names [`GENESIS`] or a record that is there, and no record is named by
/// two (a fork means one was inserted or replaced). A removed record shows
/// as its successor's missing predecessor; a removed or edited last record
/// of a chain shows only against the writer's own log (`audit verify`
/// compares them).
pub fn verify_copies(source: &str, lines: &[String]) -> Result<Chains> {
    let mut records = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let record: Record =
            serde_json::from_str(line).with_context(|| format!("{source}: copy {} is not an audit record", n + 1))?;
        records.push((hash(line), record));
    }
    let present: std::collections::HashSet<&str> = records.iter().map(|(h, _)| h.as_str()).collect();
    let mut successors: std::collections::HashMap<&str, &Record> = std::collections::HashMap::new();
    let mut chains = 0;
    for (_, record) in &records {
        let at = || format!("{} {} at {} by {}", record.command, record.phase, record.time, record.caller);
        if record.prev == GENESIS {
            chains += 1;
            continue;
        }
        ensure!(
            present.contains(record.prev.as_str()),
            "{source}: the record before {} is missing (removed or edited)",
            at()
        );
        if let Some(other) = successors.insert(record.prev.as_str(), record) {
            bail!(
                "{source}: {} and {} {} at {} both follow the same record: one was inserted or replaced",
                at(),
                other.command,
                other.phase,
                other.time
            );
        }
    }
    Ok(Chains { records: records.len(), chains })
}

/// The S3 copies (every writer's), each checked against the hash in its key
/// and against the writer its prefix belongs to.
pub async fn bucket_lines(aws: &Aws, bucket: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pages = aws.s3().list_objects_v2().bucket(bucket).prefix(PREFIX).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("S3 ListObjectsV2", bucket, e))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key()).map(String::from));
    }
    keys.sort();
    let mut lines = Vec::new();
    for key in keys {
        let bytes = crate::aws::s3::get_bytes(&aws.s3(), bucket, &key, 1 << 20, std::time::Duration::from_secs(30))
            .await?
            .with_context(|| format!("s3://{bucket}/{key} vanished while reading"))?;
        let line = String::from_utf8(bytes).with_context(|| format!("s3://{bucket}/{key} is not text"))?;
        let named = key.rsplit('-').next().unwrap_or_default().trim_end_matches(".json");
        ensure!(
            hash(&line) == named,
            "s3://{bucket}/{key}: its content does not hash to the name it was written under"
        );
        let record: Record =
            serde_json::from_str(&line).with_context(|| format!("s3://{bucket}/{key} is not an audit record"))?;
        let claim = writers::Claim { command: &record.command, phase: &record.phase, caller: &record.caller };
        writers::check(&key, &claim).with_context(|| format!("s3://{bucket}: a record in the wrong writer's place"))?;
        lines.push(line);
    }
    Ok(lines)
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub local: Option<usize>,
    pub bucket: Option<usize>,
    /// How many chains the bucket holds (writers that started afresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chains: Option<usize>,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(n) = self.local {
            writeln!(f, "local log: {n} record(s), the chain holds")?;
        }
        if let (Some(n), Some(chains)) = (self.bucket, self.chains) {
            let matched = if self.local.is_some() { ", every local record has its copy" } else { "" };
            writeln!(f, "S3 copies: {n} record(s) in {chains} chain(s), every link holds{matched}")?;
        }
        Ok(())
    }
}

pub(crate) fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the audit log {}", path.display()))?;
    Ok(text.lines().map(String::from).collect())
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct LogReport(pub Vec<Record>);

impl std::fmt::Display for LogReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.0 {
            writeln!(
                f,
                "{}  {:<8} {:<16} {:<28} {}{}",
                r.time,
                r.phase,
                r.command,
                r.targets.join(","),
                r.result.as_deref().unwrap_or(""),
                if r.resources.is_empty() { String::new() } else { format!(" [{}]", r.resources.join(", ")) }
            )?;
            writeln!(f, "    by {}", r.caller)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(command: &str, prev: &str) -> String {
        let record = Record {
            time: "2026-11-22T01:00:00.000000000Z".into(),
            caller: "arn:aws:iam::123456789012:user/alice".into(),
            command: command.into(),
            args: vec![],
            targets: vec![],
            phase: "started".into(),
            result: None,
            resources: vec![],
            prev: prev.into(),
        };
        serde_json::to_string(&record).unwrap()
    }

    #[test]
    fn a_record_time_has_seconds_and_one_nine_digit_fraction() {
        for _ in 0..100 {
            let time = crate::clock::now_precise();
            let (seconds, fraction) = time.split_once('.').unwrap();
            assert_eq!(seconds.len(), "2026-11-22T01:26:56".len(), "{time}");
            assert!(!seconds.contains('Z'), "{time}");
            let digits = fraction.strip_suffix('Z').unwrap();
            assert!(digits.len() == 9 && digits.chars().all(|c| c.is_ascii_digit()), "{time}");
        }
    }

    #[test]
    fn copies_from_many_writers_are_checked_as_chains() {
        let a1 = line("a1", GENESIS);
        let a2 = line("a2", &hash(&a1));
        let b1 = line("b1", GENESIS);
        let lines = vec![a1.clone(), b1.clone(), a2.clone()];
        assert_eq!(verify_copies("s3", &lines).unwrap(), Chains { records: 3, chains: 2 });

        // A record slipped in after a1 beside a2: a fork.
        let forged = line("forged", &hash(&a1));
        let err = verify_copies("s3", &[a1.clone(), a2.clone(), forged]).unwrap_err().to_string();
        assert!(err.contains("both follow the same record"), "{err}");

        // a1 removed: a2 names a predecessor that is not there.
        let err = verify_copies("s3", &[b1, a2]).unwrap_err().to_string();
        assert!(err.contains("the record before a2 started"), "{err}");

        let err = verify_copies("s3", &["{not json".to_string()]).unwrap_err().to_string();
        assert!(err.contains("copy 1 is not an audit record"), "{err}");
    }
}
