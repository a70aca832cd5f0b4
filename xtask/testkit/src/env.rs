//! What every test that touches AWS starts from: a fresh emulator with a
//! bucket and a scratch directory, one way to run a CLI against it, and
//! file-tree snapshots.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clawdinator::aws::{Aws, Settings};

use crate::emulator::Emulator;

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

/// A fresh emulator with one bucket and the fleet's SSM documents, and a scratch directory.
pub async fn env() -> Env {
    let emulator = tokio::task::spawn_blocking(Emulator::start).await.unwrap().unwrap();
    let aws = Aws::load(&Settings::local(&emulator.endpoint())).await.unwrap();
    let bucket = "clawdinator-test".to_string();
    aws.s3().create_bucket().bucket(&bucket).send().await.unwrap();
    let env = Env { emulator, aws, bucket, dir: tempfile::tempdir().unwrap() };
    env.host_command_documents().await;
    env
}

impl Env {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `program` (a binary of the workspace) pointed at this emulator, with
    /// its dummy credentials and the audit log in the scratch directory:
    /// the one way tests run a CLI against AWS.
    pub fn cli(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .env("AWS_ENDPOINT_URL", self.emulator.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("CLAWDINATOR_AUDIT_LOG", self.path("audit.jsonl"));
        command
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

    /// The `vmimport` role VM Import assumes, allowed to read `bucket`
    /// (another bucket's name makes VM Import fail as AWS does).
    pub async fn vmimport_role(&self, bucket: &str) {
        let iam = self.aws.iam();
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        iam.create_role().role_name("vmimport").assume_role_policy_document(trust).send().await.unwrap();
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["s3:GetBucketLocation","s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::{bucket}","arn:aws:s3:::{bucket}/*"]}}]}}"#
        );
        iam.put_role_policy()
            .role_name("vmimport")
            .policy_name("vmimport")
            .policy_document(policy)
            .send()
            .await
            .unwrap();
    }

    /// An untagged AMI named `name` whose root (`device`) is `snapshot`: its id.
    pub async fn register_ami(&self, name: &str, snapshot: &str, device: &str) -> String {
        use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
        let mapping = BlockDeviceMapping::builder()
            .device_name(device)
            .ebs(EbsBlockDevice::builder().snapshot_id(snapshot).build())
            .build();
        let ec2 = self.aws.ec2();
        let image = ec2.register_image().name(name).root_device_name("/dev/xvda").block_device_mappings(mapping);
        image.send().await.unwrap().image_id.unwrap()
    }

    /// What OpenTofu's S3 backend needs (the fleet's first apply creates
    /// both): the state bucket and the lock table; kept when they exist.
    pub fn tofu_backend(&self, bucket: &str, lock_table: &str) {
        let script = "import boto3, sys\n\
            kw = dict(endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
            s3, ddb = boto3.client('s3', **kw), boto3.client('dynamodb', **kw)\n\
            if sys.argv[2] not in [b['Name'] for b in s3.list_buckets()['Buckets']]: s3.create_bucket(Bucket=sys.argv[2])\n\
            if sys.argv[3] not in ddb.list_tables()['TableNames']: ddb.create_table(TableName=sys.argv[3],\n\
              KeySchema=[{'AttributeName': 'LockID', 'KeyType': 'HASH'}],\n\
              AttributeDefinitions=[{'AttributeName': 'LockID', 'AttributeType': 'S'}], BillingMode='PAY_PER_REQUEST')\n";
        let out = std::process::Command::new(crate::emulator::venv_python())
            .args(["-c", script, &self.emulator.endpoint(), bucket, lock_table])
            .output()
            .expect("the emulator's python");
        assert!(out.status.success(), "the tofu backend: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The fleet's SSM documents as OpenTofu creates them (ssm.tf): each
    /// file `infra/opentofu/aws/ssm/NAME.json` as `clawdinator-NAME`.
    pub async fn host_command_documents(&self) {
        let dir = crate::repo_root().join("infra/opentofu/aws/ssm");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = format!("clawdinator-{}", path.file_stem().unwrap().to_string_lossy());
            let content = std::fs::read_to_string(&path).unwrap();
            let document = self.aws.ssm().create_document().name(name).content(content);
            let document = document.document_type(aws_sdk_ssm::types::DocumentType::Command);
            document.document_format(aws_sdk_ssm::types::DocumentFormat::Json).send().await.unwrap();
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.aws.s3().put_object().bucket(&self.bucket).key(key).body(bytes.into()).send().await.unwrap();
    }
}

/// Settings a command reads from the environment: a CLI run that touches no
/// AWS starts without them, so that what the test machine happens to have
/// set cannot change what it tests.
const SETTINGS: [&str; 10] = [
    "AWS_REGION",
    "CLAWDINATOR_REGION_FILE",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "S3_BUCKET",
    "GITHUB_APP_ID",
    "GITHUB_APP_INSTALLATION_ID",
    "GITHUB_APP_PEM_FILE",
    "CLAWDINATOR_AUDIT_BUCKET",
    "CLAWDINATOR_CALLER",
];

/// `program` (a binary of the workspace) for a run that touches no AWS:
/// the one runner for those, as [`Env::cli`] is for runs against the emulator.
pub fn offline_cli(program: &str) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for name in SETTINGS {
        command.env_remove(name);
    }
    command
}

/// Every entry below `root`: relative path -> (mode, content; None for
/// dirs; `-> target` with mode 0 for links, which are not followed).
pub fn snapshot(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Option<Vec<u8>>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, (0, Some(format!("-> {}", target.display()).into_bytes())));
            } else if meta.is_dir() {
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

/// A stand-in `nix` that checks its arguments and writes the output tree
/// nixpkgs' amazon image produces (a 3 MiB raw disk). The real build needs
/// nix with flakes and KVM.
pub const FAKE_NIX: &str = r#"#!/bin/sh
case "$1" in
  --version) echo "nix (Nix) 2.24.9" ;;
  config) echo "$FAKE_FEATURES" ;;
  build)
    echo "$@" > "$FAKE_STORE/args"
    [ "$2" = ".#nixosConfigurations.clawdinator-image.config.system.build.images.amazon" ] || { echo "unexpected installable $2" >&2; exit 1; }
    out="$FAKE_STORE/0123456789abcdfghijklmnpqrsvwxyz-nixos-amazon-image-25.05"
    mkdir -p "$out/nix-support"
    img="$out/nixos-amazon-image-25.05.20250101.abcdef0-x86_64-linux.raw"
    head -c 3145728 /dev/zero > "$img"
    printf 'NixOS root' | dd of="$img" bs=1 seek=1048576 conv=notrunc 2>/dev/null
    cat > "$out/nix-support/image-info.json" <<JSON
{"label": "25.05.20250101.abcdef0", "system": "x86_64-linux", "boot_mode": "legacy-bios", "logical_bytes": "3145728", "file": "$img"}
JSON
    shift 2
    while [ $# -gt 0 ]; do [ "$1" = "--out-link" ] && ln -sfn "$out" "$2"; shift; done
    echo "building the image (stand-in)" >&2
    echo "$out"
    ;;
  *) echo "unexpected nix call: $*" >&2; exit 1 ;;
esac
"#;

/// Install the stand-in under `dir/bin`, a store at `dir/store`, a flake
/// directory `dir/flake` and a stand-in KVM device; returns (PATH, kvm).
pub fn stand_in_nix(dir: &Path) -> (String, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.join("store")).unwrap();
    std::fs::create_dir_all(dir.join("flake")).unwrap();
    std::fs::write(dir.join("flake/flake.nix"), "{ outputs = _: { }; }\n").unwrap();
    std::fs::write(bin.join("nix"), FAKE_NIX).unwrap();
    std::fs::set_permissions(bin.join("nix"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kvm = dir.join("kvm");
    std::fs::write(&kvm, "").unwrap();
    (format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()), kvm)
}

/// A stand-in `tofu`: records each call (arguments, TF_ environment and
/// the content of its -var-file) as a JSON line in $TOFU_LOG; `apply` creates the targeted
/// missing instances, or terminates and recreates a `-replace`d one, from
/// `-var=ami_id=`, with the registry's type and the fleet tags, as the real
/// apply of infra/opentofu/aws would: a new instance first gets its role
/// (within the instance boundary, $TOFU_BOUNDARY_ARN) and instance profile,
/// and is launched in $TOFU_SECURITY_GROUP when set. $TOFU_FAIL makes an
/// apply fail.
pub fn stand_in_tofu(dir: &Path) -> PathBuf {
    // The program is stand-ins/tofu.py; its first line names the venv's python (with boto3).
    let python = crate::emulator::venv_python();
    let script = format!("#!{}\n{}", python.display(), include_str!("../stand-ins/tofu.py"));
    let path = dir.join("bin/tofu");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.join("bin")
}
