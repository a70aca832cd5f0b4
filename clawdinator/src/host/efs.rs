//! `host efs-stunnel-config`: NFS to the fleet's EFS carried over TLS by
//! stunnel, configured at boot because the file system id is the instance's
//! (user data writes it), never the image's.
//!
//! Unlike the old configuration, the tunnel checks that the certificate is
//! for this file system's endpoint (`checkHost`), not merely that some
//! trusted CA signed it.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use serde::Serialize;

use super::flags::EfsStunnelConfigArgs;
use crate::ctx::Ctx;
use crate::exit::UsageError;
use crate::settings::given_or_written;

/// One tunnel: the local NFS address to the file system's TLS endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tunnel {
    pub file_system_id: String,
    pub region: String,
    pub ca_file: PathBuf,
    pub accept: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReport {
    pub path: String,
    pub endpoint: String,
}

impl std::fmt::Display for ConfigReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "wrote {} (NFS over TLS to {})", self.path, self.endpoint)
    }
}

impl Tunnel {
    /// The file system's DNS name inside its VPC.
    pub fn endpoint(&self) -> String {
        format!("{}.efs.{}.amazonaws.com", self.file_system_id, self.region)
    }

    fn check(&self) -> Result<()> {
        let id = self.file_system_id.strip_prefix("fs-").unwrap_or("");
        ensure!(
            (8..=40).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "\"{}\" is not an EFS file system id (fs- then 8 to 40 lowercase hex digits)",
            self.file_system_id
        );
        let parts: Vec<&str> = self.region.split('-').collect();
        ensure!(
            parts.len() >= 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
                && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())),
            "\"{}\" is not an AWS region name (like eu-central-1)",
            self.region
        );
        ensure!(self.ca_file.is_absolute(), "the CA file {} must be an absolute path", self.ca_file.display());
        Ok(())
    }

    /// The stunnel configuration text.
    pub fn config(&self) -> Result<String> {
        self.check()?;
        let endpoint = self.endpoint();
        Ok(format!(
            "# Written at boot by `clawdinator host efs-stunnel-config`; not to be edited.\n\
             foreground = yes\n\
             client = yes\n\
             \n\
             [efs]\n\
             accept = {accept}\n\
             connect = {endpoint}:2049\n\
             sslVersionMin = TLSv1.2\n\
             verifyChain = yes\n\
             checkHost = {endpoint}\n\
             CAfile = {ca}\n",
            accept = self.accept,
            ca = self.ca_file.display(),
        ))
    }
}

/// Check the tunnel's facts and write its configuration (0644: no secret in it).
pub fn write_config(tunnel: &Tunnel, out: &Path) -> Result<ConfigReport> {
    crate::atomic::write(out, tunnel.config()?.as_bytes(), 0o644)?;
    Ok(ConfigReport { path: out.display().to_string(), endpoint: tunnel.endpoint() })
}

impl EfsStunnelConfigArgs {
    /// `host efs-stunnel-config`.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let file_system_id = given_or_written(
            self.file_system_id,
            &self.file_system_id_file,
            "EFS file system id",
            "pass --file-system-id",
        )?;
        let region = ctx
            .region()
            .ok_or_else(|| UsageError("no region: pass --region, set AWS_REGION, or pass --region-file".into()))?;
        let tunnel = Tunnel { file_system_id, region, ca_file: self.ca_file, accept: self.accept };
        ctx.out.emit(&write_config(&tunnel, &self.out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(id: &str, region: &str) -> Tunnel {
        Tunnel {
            file_system_id: id.into(),
            region: region.into(),
            ca_file: "/etc/ssl/certs/ca-bundle.crt".into(),
            accept: "127.0.0.1:2049".into(),
        }
    }

    #[test]
    fn the_tunnel_checks_the_endpoint_name() {
        let text = tunnel("fs-0e7920726c2965a88", "eu-central-1").config().unwrap();
        assert!(text.contains("connect = fs-0e7920726c2965a88.efs.eu-central-1.amazonaws.com:2049\n"), "{text}");
        assert!(text.contains("checkHost = fs-0e7920726c2965a88.efs.eu-central-1.amazonaws.com\n"), "{text}");
        assert!(text.contains("verifyChain = yes\n"));
    }

    #[test]
    fn bad_ids_and_regions_are_refused_by_name() {
        for (id, region, says) in [
            ("fs-XYZ", "eu-central-1", "\"fs-XYZ\" is not an EFS file system id"),
            ("0e7920726c2965a88", "eu-central-1", "is not an EFS file system id"),
            ("fs-0e7920726c2965a88\nconnect = evil", "eu-central-1", "is not an EFS file system id"),
            ("fs-0e7920726c2965a88", "eu central 1", "\"eu central 1\" is not an AWS region name"),
            ("fs-0e7920726c2965a88", "eu-central", "is not an AWS region name"),
        ] {
            let err = tunnel(id, region).config().unwrap_err().to_string();
            assert!(err.contains(says), "{id} {region}: {err}");
        }
    }
}
