//! The bundle's wire format: the object names under a prefix, and the
//! manifest that says what the archives hold and their SHA-256.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::archive;
use super::seeds::SeedRecord;

pub const SECRETS_ARCHIVE: &str = "secrets.tar.zst";
pub const SEEDS_ARCHIVE: &str = "repo-seeds.tar.zst";
pub const MANIFEST: &str = "manifest.json";
pub const SENTINEL: &str = ".bootstrap-ok";
pub const PREFIX_MARKER: &str = ".bootstrap-prefix";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveInfo {
    pub sha256: String,
    pub size: u64,
    /// Entries in the archive: the host refuses one that holds more.
    pub entries: u64,
    /// Bytes of its files unpacked: the host refuses one that unpacks to more.
    pub unpacked_bytes: u64,
}

impl From<archive::Summary> for ArchiveInfo {
    fn from(s: archive::Summary) -> Self {
        ArchiveInfo { sha256: s.sha256, size: s.size, entries: s.entries, unpacked_bytes: s.content_bytes }
    }
}

/// A manifest is names and digests: anything larger than this is not one.
pub const MANIFEST_LIMIT: u64 = 1 << 20;

/// What a bundle holds. Never a secret value: names and digests only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub instance: String,
    pub prefix: String,
    pub archives: BTreeMap<String, ArchiveInfo>,
    /// File names inside `secrets/` of the secrets archive.
    pub secrets: Vec<String>,
    /// The Secrets Manager version (of `clawdinator/<instance>/age-identity`)
    /// holding the identity that opens this bundle: the host asks for exactly
    /// this one, so a rotation never strands a host that read this manifest.
    /// None in the old format, whose archive carried the identity itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_version: Option<String>,
    /// That identity's public key (`age1…`), the one recipient of the secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_recipient: Option<String>,
    /// What identifies the secrets without a value: the digests of their
    /// source age files. An upload whose sources have this fingerprint and
    /// whose identity is unchanged keeps the archive (each build encrypts
    /// anew, so its bytes differ every time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_fingerprint: Option<String>,
    pub seeds: Vec<SeedRecord>,
    /// What identifies the seeds archive without building it (names, sizes,
    /// modes, mtimes): an upload whose seeds have this fingerprint reuses the
    /// archive recorded here instead of compressing the tree again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds_fingerprint: Option<String>,
    /// The git revision of this repository that produced the bundle.
    pub source_revision: Option<String>,
    /// When this content was first uploaded (RFC 3339).
    pub created: String,
}

impl Manifest {
    /// Same bundle, whenever and from whichever revision it was produced:
    /// an unchanged bundle keeps its manifest, so a re-run sends nothing.
    pub fn same_content(&self, other: &Manifest) -> bool {
        self.instance == other.instance
            && self.prefix == other.prefix
            && self.archives == other.archives
            && self.secrets == other.secrets
            && self.identity_version == other.identity_version
            && self.identity_recipient == other.identity_recipient
            && self.secrets_fingerprint == other.secrets_fingerprint
            && self.seeds == other.seeds
            && self.seeds_fingerprint == other.seeds_fingerprint
    }
}

pub(crate) fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}
