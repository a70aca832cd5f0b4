//! Throwaway inputs for `--local` runs, tests and benchmarks: a registry, an
//! age identity, encrypted sample secrets, seed repositories. Nothing here
//! touches the real fleet's files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use clawdinator::secrets::{self, Sources};

/// A complete set of sources in one directory.
pub struct SampleFleet {
    pub sources: Sources,
    pub seeds_dir: PathBuf,
    pub recipient: age::x25519::Recipient,
    pub instances: Vec<String>,
}

/// Instance `n` of a sample fleet, as the registry would list it.
pub fn instance_json(n: usize) -> serde_json::Value {
    serde_json::json!({
        "host": format!("clawdinator-{n}"),
        "instanceType": "t3.large",
        "bootstrapPrefix": format!("bootstrap/clawdinator-{n}"),
        "discordTokenSecret": format!("clawdinator-discord-token-{n}"),
    })
}

/// Write a registry of `count` instances to `path`.
pub fn write_registry(path: &Path, count: usize) -> Result<Vec<String>> {
    let mut map = serde_json::Map::new();
    let mut names = Vec::new();
    for n in 1..=count {
        names.push(format!("clawdinator-{n}"));
        map.insert(format!("clawdinator-{n}"), instance_json(n));
    }
    fs::write(path, serde_json::to_vec_pretty(&map)?)?;
    Ok(names)
}

/// Generate an identity, write it with mode 0600, return its recipient.
pub fn write_identity(path: &Path) -> Result<age::x25519::Recipient> {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    use std::io::Write;
    let mut file = file;
    writeln!(file, "# throwaway identity for local runs and tests")?;
    writeln!(file, "{}", identity.to_string().expose_secret())?;
    Ok(identity.to_public())
}

/// Encrypt `value` into `dir/name.age`.
pub fn write_secret(dir: &Path, name: &str, value: &[u8], recipient: &age::x25519::Recipient) -> Result<()> {
    let bytes = secrets::encrypt(value, std::slice::from_ref(recipient))?;
    fs::write(dir.join(format!("{name}.age")), bytes)?;
    Ok(())
}

/// A sample fleet of `count` instances under `root`; every secret's
/// plaintext is `value(name)`.
pub fn sample_fleet(root: &Path, count: usize, value: impl Fn(&str) -> String) -> Result<SampleFleet> {
    fs::create_dir_all(root)?;
    let registry = root.join("instances.json");
    write_registry(&registry, count)?;
    sample_fleet_for(root, &registry, value)
}

/// The command-line flags that name `sources` (`--instances`, `--spec`,
/// `--secrets-dir`, `--age-key`), the inverse of `Sources::from_flags`.
pub fn source_args(sources: &Sources) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    [
        ("--instances", &sources.registry),
        ("--spec", &sources.spec),
        ("--secrets-dir", &sources.secrets_dir),
        ("--age-key", &sources.age_key),
    ]
    .into_iter()
    .flat_map(|(flag, path)| [flag.to_string(), s(path)])
    .collect()
}

/// Throwaway secrets for the instances of an existing registry: a new
/// identity, every common secret and each instance's token, and a small
/// prepared seeds directory.
pub fn sample_fleet_for(root: &Path, registry: &Path, value: impl Fn(&str) -> String) -> Result<SampleFleet> {
    let loaded = clawdinator::registry::Registry::load(registry)?;
    let spec_path = root.join("secrets.json");
    fs::copy(crate::repo_root().join(secrets::DEFAULT_SPEC), &spec_path)?;
    let spec = secrets::Spec::load(&spec_path)?;
    let age_key = root.join("keys/clawdinator.agekey");
    let recipient = write_identity(&age_key)?;
    let secrets_dir = root.join("age-secrets");
    fs::create_dir_all(&secrets_dir)?;
    for name in &spec.common {
        write_secret(&secrets_dir, name, value(name).as_bytes(), &recipient)?;
    }
    for instance in loaded.instances.values() {
        let name = &instance.discord_token_secret;
        write_secret(&secrets_dir, name, value(name).as_bytes(), &recipient)?;
    }
    let seeds_dir = root.join("repo-seeds");
    fs::create_dir_all(seeds_dir.join("sample/src"))?;
    fs::write(seeds_dir.join("sample/README.md"), "# sample seed\n")?;
    fs::write(seeds_dir.join("sample/src/main.rs"), "fn main() {}\n")?;
    let records = serde_json::json!([{"name": "sample", "url": "file:///dev/null/sample", "branch": null, "commit": "0000000000000000000000000000000000000000"}]);
    fs::write(seeds_dir.join(clawdinator::bootstrap::seeds::SEEDS_FILE), serde_json::to_vec_pretty(&records)?)?;
    Ok(SampleFleet {
        sources: Sources { registry: registry.to_path_buf(), spec: spec_path, secrets_dir, age_key },
        seeds_dir,
        recipient,
        instances: loaded.instances.into_keys().collect(),
    })
}

/// A git repository at `dir` with the given files, committed; returns its
/// `file://` URL.
pub fn git_repo(dir: &Path, files: &[(&str, &str)], branch: &str) -> Result<String> {
    fs::create_dir_all(dir)?;
    let sh = Shell::new()?;
    sh.change_dir(dir);
    cmd!(sh, "git init --quiet --initial-branch {branch}").quiet().run()?;
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, content)?;
    }
    commit_all(dir, "initial")?;
    Ok(format!("file://{}", dir.display()))
}

/// Commit everything in the work tree of `dir`.
pub fn commit_all(dir: &Path, message: &str) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(dir);
    cmd!(sh, "git add -A").quiet().run()?;
    cmd!(sh, "git -c user.name=clawdinator -c user.email=clawdinator@localhost -c commit.gpgsign=false commit --quiet -m {message}")
        .quiet()
        .run()?;
    Ok(())
}

/// A sparse raw disk image of `size` bytes: an MBR boot signature, then
/// pseudo-random data at each `(offset, len)`; everything else is a hole.
/// `seed` varies the data, so two seeds give two different images.
pub fn sample_raw_image(path: &Path, size: u64, data: &[(u64, u64)], seed: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    file.set_len(size)?;
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    for &(offset, len) in data {
        let mut buf = vec![0u8; len as usize];
        for chunk in buf.chunks_mut(8) {
            // xorshift64*: fast, deterministic, incompressible enough.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        file.write_all_at(&buf, offset)?;
    }
    // The boot sector last, so data at offset 0 cannot overwrite it.
    let mut mbr = vec![0u8; 512];
    mbr[0] = 0xeb;
    mbr[8..16].copy_from_slice(&seed.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    file.write_all_at(&mbr, 0)?;
    file.sync_all()?;
    Ok(())
}

/// Describe an image file the way `image-build` does, in `dir/image.json`.
pub fn write_image_json(dir: &Path, image: &Path, label: &str) -> Result<PathBuf> {
    let (sha256, size) = clawdinator::digest::sha256_file(image)?;
    let manifest = clawdinator::image::ImageManifest {
        path: image.to_path_buf(),
        format: "raw".into(),
        boot_mode: "legacy-bios".into(),
        architecture: "x86_64".into(),
        logical_bytes: size,
        sha256,
        label: label.into(),
        store_path: format!("/nix/store/00000000000000000000000000000000-{label}"),
        source_revision: clawdinator::project::git_revision().map(|r| r.trim_end_matches("-dirty").to_string()),
        dirty: false,
        block_sha256: Some(clawdinator::image::snapshot::block_digest(image)?),
    };
    fs::create_dir_all(dir)?;
    let json = dir.join("image.json");
    fs::write(&json, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(json)
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A 6 MiB raw image under `dir` with random `data` ranges (offset, length)
/// and holes elsewhere, and its image.json: (image, json).
pub fn sample_image(dir: &Path, data: &[(u64, u64)], seed: u64) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let image = dir.join("nixos.raw");
    sample_raw_image(&image, 6 << 20, data, seed)?;
    let json = write_image_json(dir, &image, "25.05.20250101.abcdef0")?;
    Ok((image, json))
}

/// A fresh GitHub App key pair for tests: (private PEM, public PEM).
pub fn github_app_key() -> Result<(String, String)> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
    let private: Pkcs8V1Der = key.as_der().map_err(|_| anyhow::anyhow!("cannot encode the private key"))?;
    let public: PublicKeyX509Der =
        key.public_key().as_der().map_err(|_| anyhow::anyhow!("cannot encode the public key"))?;
    Ok((pem("PRIVATE KEY", private.as_ref()), pem("PUBLIC KEY", public.as_ref())))
}

/// The Authorization header a request to `url` with `body`, signed at
/// `amz_date` (`20261121T233500Z`, its X-Amz-Date) with `credentials`, must
/// carry: what a loopback function URL recomputes to check a signature.
pub fn sigv4_authorization(
    url: &str,
    body: &[u8],
    amz_date: &str,
    credentials: aws_credential_types::Credentials,
    region: &str,
) -> Result<String> {
    let d = amz_date;
    anyhow::ensure!(d.len() == 16 && d.ends_with('Z'), "{d} is not an X-Amz-Date");
    let rfc = format!("{}-{}-{}T{}:{}:{}Z", &d[0..4], &d[4..6], &d[6..8], &d[9..11], &d[11..13], &d[13..15]);
    let time = aws_smithy_types::DateTime::from_str(&rfc, aws_smithy_types::date_time::Format::DateTime)?;
    let time = std::time::SystemTime::try_from(time)?;
    let request = clawdinator::fleet::control::signed_request(url, body, credentials, region, time)?;
    Ok(request.headers()["authorization"].to_str()?.to_string())
}
