//! `cargo xtask image build`: the NixOS image as a raw disk, described in
//! `dist/image.json` for `image publish`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use super::flags::BuildArgs;
use crate::ctx::Ctx;
use crate::{digest, output};

/// What `image publish` needs to know about a built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageManifest {
    /// The disk image file.
    pub path: PathBuf,
    /// `raw`, `vhd` or `vmdk`.
    pub format: String,
    /// `legacy-bios` or `uefi`.
    pub boot_mode: String,
    /// EC2 architecture: `x86_64` or `arm64`.
    pub architecture: String,
    /// Size of the disk the image describes, in bytes.
    pub logical_bytes: u64,
    pub sha256: String,
    pub label: String,
    pub store_path: String,
    pub source_revision: Option<String>,
    pub dirty: bool,
    /// SHA-256 over the SHA-256 of each 512 KiB block, in order, the last
    /// one zero-padded (EBS's linear aggregation, over every block). An all-
    /// zero block's digest is a constant, so EBS direct verifies this one
    /// without hashing the holes; without it, publish hashes the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_sha256: Option<String>,
}

impl ImageManifest {
    /// Read and check `image.json` and the file it names, before any AWS call.
    pub fn load(path: &Path) -> Result<ImageManifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {} (run `cargo xtask image build` first)", path.display()))?;
        let manifest: ImageManifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid image description", path.display()))?;
        ensure!(
            ["raw", "vhd", "vmdk"].contains(&manifest.format.as_str()),
            "{}: format {:?} is not raw, vhd or vmdk",
            path.display(),
            manifest.format
        );
        ensure!(
            ["legacy-bios", "uefi"].contains(&manifest.boot_mode.as_str()),
            "{}: bootMode {:?} is not legacy-bios or uefi",
            path.display(),
            manifest.boot_mode
        );
        ensure!(
            ["x86_64", "arm64"].contains(&manifest.architecture.as_str()),
            "{}: architecture {:?} is not x86_64 or arm64",
            path.display(),
            manifest.architecture
        );
        ensure!(
            manifest.sha256.len() == 64 && manifest.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}: sha256 is not a hex SHA-256",
            path.display()
        );
        let image = manifest.image_path(path);
        let meta = std::fs::metadata(&image)
            .with_context(|| format!("{}: the image file {} is missing", path.display(), image.display()))?;
        if manifest.format == "raw" {
            ensure!(
                meta.len() == manifest.logical_bytes,
                "{}: the image file {} is {} bytes but logicalBytes says {}: rebuild it",
                path.display(),
                image.display(),
                meta.len(),
                manifest.logical_bytes
            );
        }
        Ok(manifest)
    }

    /// The image path; a relative one is relative to the manifest's directory.
    pub fn image_path(&self, manifest_path: &Path) -> PathBuf {
        if self.path.is_absolute() {
            self.path.clone()
        } else {
            manifest_path.parent().unwrap_or(Path::new(".")).join(&self.path)
        }
    }

    /// The AMI name: `clawdinator-nixos-<label>-<first 12 hex of sha256>`,
    /// then `-kms<8 hex>` when encrypted with a chosen key (an image published
    /// with and without a key is two AMIs).
    pub fn ami_name_for(&self, kms_key: Option<&str>) -> String {
        match kms_key {
            Some(key) => {
                format!("{}-kms{}", self.ami_name(), &digest::sha256_hex(key.as_bytes())[..8])
            }
            None => self.ami_name(),
        }
    }

    fn ami_name(&self) -> String {
        let label: String = self
            .label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "().-_".contains(c) { c } else { '_' })
            .take(90)
            .collect();
        format!("clawdinator-nixos-{label}-{}", &self.sha256[..12])
    }
}

/// nixpkgs' `nix-support/image-info.json`.
#[derive(Debug, Deserialize)]
struct ImageInfo {
    label: String,
    system: String,
    boot_mode: String,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    disks: Option<serde_json::Value>,
    #[serde(default)]
    logical_bytes: Option<serde_json::Value>,
}

pub fn architecture_of(system: &str) -> Result<&'static str> {
    match system {
        "x86_64-linux" => Ok("x86_64"),
        "aarch64-linux" => Ok("arm64"),
        other => bail!("image system {other:?} is neither x86_64-linux nor aarch64-linux"),
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub host: String,
    /// The directory holding `flake.nix`.
    pub flake: PathBuf,
    pub out: PathBuf,
    /// The KVM device the build needs (a test may point elsewhere).
    pub kvm_device: PathBuf,
}

/// The experimental features nix runs with (`nix config show` since 2.19,
/// `nix show-config` before), or None when nix cannot run.
pub fn nix_features() -> Option<(String, String)> {
    let sh = Shell::new().ok()?;
    let version = cmd!(sh, "nix --version").quiet().ignore_stderr().read().ok()?.trim().to_string();
    let features = cmd!(sh, "nix config show experimental-features")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .or_else(|| {
            let all = cmd!(sh, "nix show-config").quiet().ignore_stderr().read().ok()?;
            all.lines().find_map(|l| l.strip_prefix("experimental-features = ").map(str::to_string))
        })
        .unwrap_or_default();
    Some((version, features))
}

/// Why an image cannot be built here (nix, flakes, KVM), with what to do.
pub fn build_blocker(kvm_device: &Path) -> Option<String> {
    match nix_features() {
        None => Some("nix is not installed: image builds need Nix with flakes (run inside `nix develop`, or install Nix from https://nixos.org/download)".into()),
        Some((version, features)) if !features.split_whitespace().any(|f| f == "flakes") => Some(format!(
            "{version} has flakes disabled: add `experimental-features = nix-command flakes` to ~/.config/nix/nix.conf"
        )),
        Some(_) if !kvm_device.exists() => Some(format!(
            "{} not found: building the image runs a VM and needs KVM (build on bare metal or a VM with nested virtualisation, or let CI build it)",
            kvm_device.display()
        )),
        Some(_) => None,
    }
}

impl BuildArgs {
    /// What these flags ask to build, paths resolved against the project.
    pub fn options(&self) -> BuildOptions {
        BuildOptions {
            host: self.host.clone().unwrap_or_else(|| IMAGE_HOST.to_string()),
            flake: crate::project::resolve(&self.flake),
            out: crate::project::resolve(&self.out),
            kvm_device: self.kvm_device.clone(),
        }
    }

    /// `image build`: the image, its description, and its digest for a workflow.
    pub(super) fn run(self, ctx: &Ctx) -> Result<()> {
        let manifest = build(&self.options())?;
        output::github_output("image_sha256", &manifest.sha256)?;
        ctx.out.emit(&manifest)
    }
}

/// Build the host's raw amazon image and write `out/image.json`; returns
/// what it wrote.
pub fn build(opts: &BuildOptions) -> Result<ImageManifest> {
    check_buildable(opts)?;
    let store_path = nix_build(opts)?;
    let manifest = describe(store_path)?;
    // Written whole or not at all: publish must never read half a description.
    crate::atomic::write(&image_json(&opts.out), &serde_json::to_vec_pretty(&manifest)?, 0o644)?;
    Ok(manifest)
}

/// Nix with flakes, KVM and a flake, or an error saying which is missing.
fn check_buildable(opts: &BuildOptions) -> Result<()> {
    if let Some(why) = build_blocker(&opts.kvm_device) {
        bail!("{why}");
    }
    ensure!(
        opts.flake.join("flake.nix").is_file(),
        "{} has no flake.nix: pass --flake DIR (the directory holding the fleet's flake)",
        opts.flake.display()
    );
    Ok(())
}

/// `nix build` the host's amazon image (out-link in `out`); returns its store path.
fn nix_build(opts: &BuildOptions) -> Result<String> {
    let sh = Shell::new()?;
    sh.change_dir(&opts.flake);
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let attr = format!(".#nixosConfigurations.{}.config.system.build.images.amazon", opts.host);
    let out_link = opts.out.join("result");
    // -L streams the build log; stdout is the store path.
    let store_path =
        cmd!(sh, "nix build {attr} --print-out-paths --print-build-logs --no-update-lock-file --out-link {out_link}")
            .read()
            .with_context(|| format!("nix build {attr} failed (see its output above)"))?;
    let store_path = store_path.lines().last().unwrap_or_default().trim().to_string();
    ensure!(!store_path.is_empty(), "nix build printed no output path");
    Ok(store_path)
}

/// Describe the image nix built at `store_path`: nixpkgs' image-info.json,
/// the file's digests and the checkout's revision.
fn describe(store_path: String) -> Result<ImageManifest> {
    let info_path = Path::new(&store_path).join("nix-support/image-info.json");
    let info = ImageInfo::read(&info_path)?;
    let file = info.file(&info_path)?;
    let format = disk_format(&file)?;
    let size = std::fs::metadata(&file).with_context(|| format!("the image {} is missing", file.display()))?.len();
    let (sha256, _) = digest::sha256_file(&file)?;
    let block_sha256 = Some(super::snapshot::block_digest(&file)?);
    let revision = crate::project::git_revision();
    Ok(ImageManifest {
        path: file,
        format: format.into(),
        boot_mode: info.boot_mode.clone(),
        architecture: architecture_of(&info.system)?.into(),
        logical_bytes: info.logical_bytes(size),
        sha256,
        label: info.label.clone(),
        store_path,
        dirty: revision.as_deref().is_some_and(|r| r.ends_with("-dirty")),
        block_sha256,
        source_revision: revision.map(|r| r.trim_end_matches("-dirty").to_string()),
    })
}

impl ImageInfo {
    fn read(info_path: &Path) -> Result<ImageInfo> {
        let text =
            std::fs::read_to_string(info_path).with_context(|| format!("cannot read {}", info_path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not the image-info.json nixpkgs writes", info_path.display()))
    }

    /// The disk image file: `file`, or (newer nixpkgs) the root disk's.
    fn file(&self, info_path: &Path) -> Result<PathBuf> {
        self.file
            .clone()
            .or_else(|| self.disks.as_ref().and_then(|d| d["root"]["file"].as_str()).map(PathBuf::from))
            .with_context(|| format!("{} names no image file", info_path.display()))
    }

    /// The size of the disk the image describes; the file's `size` when
    /// image-info.json does not say.
    fn logical_bytes(&self, size: u64) -> u64 {
        match &self.logical_bytes {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(size),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(size),
            _ => size,
        }
    }
}

/// `raw`, `vhd` or `vmdk`, from the image file's extension.
fn disk_format(file: &Path) -> Result<&'static str> {
    match file.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "img" | "raw" => Ok("raw"),
        "vhd" => Ok("vhd"),
        "vmdk" => Ok("vmdk"),
        other => {
            bail!("{}: unexpected image type .{other} (set amazonImage.format = \"raw\" in the flake)", file.display())
        }
    }
}

/// Where `build` describes the image it built.
pub fn image_json(out: &Path) -> PathBuf {
    out.join("image.json")
}

impl fmt::Display for ImageManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "image {} ({} {}, {}, {}) sha256 {}",
            self.path.display(),
            self.format,
            self.architecture,
            self.boot_mode,
            indicatif::HumanBytes(self.logical_bytes),
            self.sha256
        )
    }
}

/// The flake's configuration of the fleet's one generic image: every
/// instance boots it and learns who it is from its user data.
pub const IMAGE_HOST: &str = "clawdinator-image";
