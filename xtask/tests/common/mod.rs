//! Shared test scaffolding: a fresh emulator per test and file-tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use xtask::aws::emulator::Emulator;
use xtask::aws::{Aws, Settings};

/// A secret value used by every fixture: it must never show up in any output.
pub const CANARY: &str = "CANARY-5e3b9c1d-never-print-me";

pub fn canary_value(name: &str) -> String {
    format!("{CANARY}:{name}")
}

pub struct Env {
    pub emulator: Emulator,
    pub aws: Aws,
    pub bucket: String,
    pub dir: tempfile::TempDir,
}

/// A fresh emulator with one bucket, and a scratch directory.
pub async fn env() -> Env {
    let emulator = tokio::task::spawn_blocking(Emulator::start).await.unwrap().unwrap();
    let aws = Aws::load(&Settings::local(&emulator.endpoint())).await.unwrap();
    let bucket = "clawdinator-test".to_string();
    aws.s3().create_bucket().bucket(&bucket).send().await.unwrap();
    Env { emulator, aws, bucket, dir: tempfile::tempdir().unwrap() }
}

impl Env {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub async fn keys(&self) -> Vec<String> {
        let out = self.aws.s3().list_objects_v2().bucket(&self.bucket).send().await.unwrap();
        let mut keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
        keys.sort();
        keys
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        let out = self.aws.s3().get_object().bucket(&self.bucket).key(key).send().await.unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.aws.s3().put_object().bucket(&self.bucket).key(key).body(bytes.into()).send().await.unwrap();
    }
}

/// Every entry below `root`: relative path -> (mode, content; None for dirs).
pub fn snapshot(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Option<Vec<u8>>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (mode, None));
                walk(root, &path, out);
            } else {
                out.insert(rel, (mode, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Names of the entries of a tar.zst.
pub fn archive_entries(bytes: &[u8]) -> Vec<String> {
    let mut tar = tar::Archive::new(zstd::Decoder::new(bytes).unwrap());
    tar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
}
