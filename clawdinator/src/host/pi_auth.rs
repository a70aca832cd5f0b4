//! `host pi-auth`: the pi coding agent's `auth.json` from the API key
//! files the gateway gets too, written whole (0600, through a temporary
//! file and a rename), every value read in memory only. A missing or empty
//! key file is named and nothing is written.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use zeroize::Zeroizing;

use super::flags::PiAuthArgs;
use crate::ctx::Ctx;

#[derive(Debug, Serialize)]
pub struct PiAuthReport {
    pub out: String,
    pub providers: Vec<&'static str>,
}

impl std::fmt::Display for PiAuthReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "wrote {} ({})", self.out, self.providers.join(", "))
    }
}

fn key(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    let key = Zeroizing::new(text.trim().to_string());
    ensure!(!key.is_empty(), "the key file {} is empty", path.display());
    Ok(key)
}

pub fn write(openai: &Path, anthropic: &Path, out: &Path) -> Result<PiAuthReport> {
    let (openai, anthropic) = (key(openai)?, key(anthropic)?);
    let json = Zeroizing::new(
        serde_json::json!({
            "openai": {"type": "api_key", "key": openai.as_str()},
            "anthropic": {"type": "api_key", "key": anthropic.as_str()},
        })
        .to_string(),
    );
    crate::atomic::write(out, json.as_bytes(), 0o600)?;
    Ok(PiAuthReport { out: out.display().to_string(), providers: vec!["openai", "anthropic"] })
}

impl PiAuthArgs {
    /// `host pi-auth`.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        ctx.out.emit(&write(&self.openai_key_file, &self.anthropic_key_file, &self.out)?)
    }
}
