//! Reproducible tar + zstd archives and their guarded unpacking.
//!
//! The same input gives the same bytes: entries sorted, mtime 0, uid/gid 0,
//! no user names, fixed modes. Unpacking accepts only plain files and
//! directories at relative paths inside the target.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use sha2::{Digest, Sha256};

use crate::digest::Hashing;

const ZSTD_LEVEL: i32 = 3;

/// What a finished archive is: its digest and size, and what unpacking it
/// produces (the host bounds unpacking by these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub sha256: String,
    pub size: u64,
    pub entries: u64,
    /// The bytes of all files in it, unpacked.
    pub content_bytes: u64,
}

/// Builds one archive, entry by entry, in the order given by the caller
/// (who sorts them).
pub struct Writer<W: Write> {
    tar: tar::Builder<zstd::Encoder<'static, Hashing<W>>>,
    entries: u64,
    content_bytes: u64,
}

/// zstd workers for large archives. Fixed, not the machine's core count: the
/// output of multithreaded zstd depends on its parameters, and the same
/// input must give the same bytes on every machine.
const ZSTD_WORKERS: u32 = 2;

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Result<Self> {
        Self::with_encoder(zstd::Encoder::new(Hashing::new(out), ZSTD_LEVEL)?)
    }

    /// For large trees (the seeds): compression runs on worker threads.
    pub fn new_parallel(out: W) -> Result<Self> {
        let mut encoder = zstd::Encoder::new(Hashing::new(out), ZSTD_LEVEL)?;
        encoder.multithread(ZSTD_WORKERS)?;
        Self::with_encoder(encoder)
    }

    fn with_encoder(encoder: zstd::Encoder<'static, Hashing<W>>) -> Result<Self> {
        let mut tar = tar::Builder::new(encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Writer { tar, entries: 0, content_bytes: 0 })
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar.append_data(&mut header, format!("{}/", path.trim_end_matches('/')), io::empty())?;
        self.entries += 1;
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, size: u64, data: impl Read) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, size);
        self.tar.append_data(&mut header, path, data)?;
        self.entries += 1;
        self.content_bytes += size;
        Ok(())
    }

    /// Finish the archive: the output and what the archive is.
    pub fn finish(self) -> Result<(W, Summary)> {
        let encoder = self.tar.into_inner()?;
        let (out, sha256, size) = encoder.finish()?.finish();
        Ok((out, Summary { sha256, size, entries: self.entries, content_bytes: self.content_bytes }))
    }
}

/// One entry of a tree as it is archived.
pub enum TreeEntry {
    Dir {
        archived: String,
    },
    /// A file, or a link to a file inside the tree stored as a copy of it.
    File {
        archived: String,
        source: PathBuf,
        meta: fs::Metadata,
    },
    /// Left out: a link to outside the tree or to a non-file, a socket, …
    Skipped {
        archived: String,
    },
}

/// Walk a tree depth-first in sorted order, as it is archived under `under`.
/// Links are not archived as links (the host refuses links): one to a
/// regular file inside `root` becomes a copy of that file, any other is
/// skipped.
pub fn walk_tree(root: &Path, under: &str, mut visit: impl FnMut(TreeEntry) -> Result<()>) -> Result<()> {
    let canonical_root = fs::canonicalize(root).with_context(|| format!("cannot read {}", root.display()))?;
    let mut stack = vec![PathBuf::new()];
    visit(TreeEntry::Dir { archived: under.to_string() })?;
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel_path = rel.join(&name);
            let full = root.join(&rel_path);
            let archived =
                format!("{under}/{}", rel_path.to_str().with_context(|| format!("{} is not UTF-8", full.display()))?);
            let meta = fs::symlink_metadata(&full)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                visit(TreeEntry::Dir { archived })?;
                subdirs.push(rel_path);
            } else if kind.is_file() {
                visit(TreeEntry::File { archived, source: full, meta })?;
            } else {
                match fs::canonicalize(&full) {
                    Ok(target) if kind.is_symlink() && target.starts_with(&canonical_root) && target.is_file() => {
                        let meta = fs::metadata(&target)?;
                        visit(TreeEntry::File { archived, source: target, meta })?;
                    }
                    _ => visit(TreeEntry::Skipped { archived })?,
                }
            }
        }
        // Depth-first in sorted order: push in reverse so the first pops first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn archived_mode(meta: &fs::Metadata) -> u32 {
    if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// Archive a directory tree (sorted, modes normalised to 0755/0644); returns
/// the entries left out, so the caller can say so.
pub fn write_tree<W: Write>(writer: &mut Writer<W>, root: &Path, under: &str) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    walk_tree(root, under, |entry| match entry {
        TreeEntry::Dir { archived } => writer.dir(&archived, 0o755),
        TreeEntry::File { archived, source, meta } => {
            writer.file(&archived, archived_mode(&meta), meta.len(), File::open(&source)?)
        }
        TreeEntry::Skipped { archived } => {
            skipped.push(archived);
            Ok(())
        }
    })?;
    Ok(skipped)
}

/// Bump when what `write_tree` produces changes: old fingerprints then miss.
const TREE_FORMAT: &str = "clawdinator-tree-v1";

/// What identifies a tree's archive without reading a file: every entry's
/// archived name, kind, size, mode and modification time, in archive order
/// (git rewrites a file's mtime whenever it changes it). Returns the
/// fingerprint and the entries that would be left out.
pub fn fingerprint_tree(root: &Path, under: &str) -> Result<(String, Vec<String>)> {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = Sha256::new();
    hasher.update(TREE_FORMAT);
    let mut skipped = Vec::new();
    walk_tree(root, under, |entry| {
        match entry {
            TreeEntry::Dir { archived } => hasher.update(format!("d {archived}\0")),
            TreeEntry::File { archived, meta, .. } => hasher.update(format!(
                "f {archived}\0{} {} {}.{}\0",
                meta.len(),
                archived_mode(&meta),
                meta.mtime(),
                meta.mtime_nsec()
            )),
            TreeEntry::Skipped { archived } => {
                hasher.update(format!("s {archived}\0"));
                skipped.push(archived);
            }
        }
        Ok(())
    })?;
    Ok((hex::encode(hasher.finalize()), skipped))
}

/// Check that an archive path is relative and stays inside the target.
fn safe_path(raw: &Path) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => bail!("entry {} contains `..`", raw.display()),
            Component::RootDir | Component::Prefix(_) => bail!("entry {} is an absolute path", raw.display()),
        }
    }
    if clean.as_os_str().is_empty() {
        bail!("entry with an empty path");
    }
    Ok(clean)
}

/// One unpacked entry, for callers that check what an archive held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub path: PathBuf,
    pub is_dir: bool,
    pub mode: u32,
}

/// The most an archive may unpack to: the manifest's word, checked as the
/// archive is read, so a hostile or corrupt archive cannot fill the disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries: u64,
    pub content_bytes: u64,
}

/// Write one regular entry to `target`, a new file, at most `room` bytes
/// (more is refused: the manifest said less); returns the bytes written.
fn unpack_file(entry: &mut impl Read, target: &Path, raw: &Path, mode: u32, room: u64, limit: u64) -> Result<u64> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .with_context(|| format!("entry {} appears twice or cannot be created", raw.display()))?;
    let copied = io::copy(&mut entry.take(room + 1), &mut file)?;
    if copied > room {
        bail!("the archive unpacks to more than the {limit} bytes its manifest lists: refused");
    }
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(copied)
}

/// Unpack a tar.zst into `dest` (which must exist and should be empty),
/// refusing absolute paths, `..`, links, devices and anything else that is
/// not a plain file or directory, and anything past `limits`. Modes are kept
/// without setuid/setgid/sticky.
pub fn unpack(archive: impl Read, dest: &Path, limits: Limits) -> Result<Vec<Unpacked>> {
    let mut tar = tar::Archive::new(zstd::Decoder::new(archive)?);
    let mut unpacked = Vec::new();
    let mut dirs = Vec::new();
    let mut content = 0u64;
    for entry in tar.entries()? {
        let mut entry = entry.context("the archive is corrupt")?;
        if unpacked.len() as u64 >= limits.entries {
            bail!("the archive holds more than the {} entries its manifest lists: refused", limits.entries);
        }
        let raw = entry.path()?.into_owned();
        let rel = safe_path(&raw)?;
        let mode = entry.header().mode()? & 0o777;
        let target = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target)?;
                dirs.push((target, mode));
                unpacked.push(Unpacked { path: rel, is_dir: true, mode });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let room = limits.content_bytes - content;
                content += unpack_file(&mut entry, &target, &raw, mode, room, limits.content_bytes)?;
                unpacked.push(Unpacked { path: rel, is_dir: false, mode });
            }
            other => bail!("entry {} is a {:?}, not a plain file or directory: refused", raw.display(), other),
        }
    }
    // Directory modes last: a read-only directory must first be filled.
    for (dir, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(unpacked)
}
