//! The repository variables and secrets the workflows read: one table,
//! which `doctor --ci` checks in the current environment, the workflow
//! check holds the workflows to (every `vars.X` and `secrets.X` is listed,
//! every listed one is used), and docs/ci.md lists.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Variable,
    Secret,
}

pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    pub what: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "CLAWDINATOR_CI_ROLE_ARN",
        kind: Kind::Variable,
        what: "the CI role (OpenTofu output ci_role_arn)",
    },
    Setting { name: "AWS_REGION", kind: Kind::Variable, what: "the fleet's region" },
    Setting { name: "S3_BUCKET", kind: Kind::Variable, what: "the fleet bucket (OpenTofu output bucket)" },
    Setting { name: "CLAWDINATOR_APP_ID", kind: Kind::Variable, what: "the bots' GitHub App's id (reads the seeds)" },
    Setting {
        name: "CLAWDINATOR_APP_INSTALLATION_ID",
        kind: Kind::Variable,
        what: "the bots' GitHub App's installation id",
    },
    Setting {
        name: "CLAWDINATOR_DEPLOY_APP_LOGIN",
        kind: Kind::Variable,
        what: "the deploy App's bot login (e.g. clawdinator-deploy[bot]): the control API's dispatches come as it",
    },
    Setting {
        name: "CLAWDINATOR_OPERATORS",
        kind: Kind::Variable,
        what: "the GitHub logins, space-separated, that may start fleet-deploy by hand",
    },
    Setting {
        name: "CLAWDINATOR_TFVARS",
        kind: Kind::Variable,
        what: "the fleet's OpenTofu variables as tfvars JSON (every variable without a default but ami_id)",
    },
    Setting {
        name: "CLAWDINATOR_CACHE_BUCKET",
        kind: Kind::Variable,
        what: "the fleet's nix binary cache bucket (OpenTofu output cache_bucket), where release build pushes the closures",
    },
    Setting { name: "CLAWDINATOR_AGE_KEY", kind: Kind::Secret, what: "the fleet's age identity" },
    Setting {
        name: "CLAWDINATOR_CACHE_KEY",
        kind: Kind::Secret,
        what: "the cache's nix signing key, NAME:BASE64 as `nix key generate-secret` writes it; hosts trust its public half",
    },
];

/// The `vars.X` and `secrets.X` a workflow text reads (GitHub's own token aside).
pub fn referenced(text: &str) -> BTreeSet<(Kind, String)> {
    let mut found = BTreeSet::new();
    for (prefix, kind) in [("vars.", Kind::Variable), ("secrets.", Kind::Secret)] {
        for (at, _) in text.match_indices(prefix) {
            // `tfvars.json` is a file name, not `vars.json`.
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let name: String =
                text[at + prefix.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != "GITHUB_TOKEN" {
                found.insert((kind, name));
            }
        }
    }
    found
}

/// What is wrong with a tfvars JSON text: the required variables it lacks.
pub fn tfvars_problems(text: &str, required: &[String]) -> Result<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let object = value.as_object().context("not a JSON object of variables")?;
    Ok(required.iter().filter(|name| !object.contains_key(name.as_str())).cloned().collect())
}

/// What is wrong with an S3 bucket name (the rule OpenTofu's
/// `cache_bucket_name` validation applies), if anything.
pub fn bucket_name_problem(name: &str) -> Option<String> {
    if name.contains("://") || name.contains('/') {
        return Some(format!("`{name}` is not a bucket name: give the name alone, not a URL or a path"));
    }
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let allowed = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let fits = (3..=63).contains(&name.len()) && allowed && ends(name.chars().next()) && ends(name.chars().last());
    (!fits || name.contains(".."))
        .then(|| format!("`{name}` is not a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens"))
}

/// A nix signing secret key, `NAME:BASE64` of 64 bytes (an ed25519 seed
/// and its public key, as `nix key generate-secret` writes it): its name
/// and the public key hosts must trust (`NAME:BASE64` of the last 32
/// bytes). The error never quotes the value.
pub fn cache_key_public_half(key: &str) -> Result<(String, String), String> {
    if key.trim() != key {
        return Err("has whitespace around it: the workflow writes it to the key file as it is".into());
    }
    let (name, payload) = key.split_once(':').ok_or("is not NAME:BASE64 (no colon)")?;
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err("has an empty name, or one with whitespace, before its colon".into());
    }
    let bytes = base64_decode(payload).ok_or("is not NAME:BASE64 (the part after the colon is not base64)")?;
    match bytes.len() {
        64 => Ok((name.to_string(), format!("{name}:{}", base64_encode(&bytes[32..])))),
        32 => Err("is a public key (32 bytes): the secret is the 64-byte key `nix key generate-secret` writes".into()),
        n => Err(format!("holds {n} bytes, not the 64 of a nix secret key")),
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as nix writes keys.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (n, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && n + 1 != chunks) {
            return None;
        }
        let mut bits: u32 = 0;
        for c in &chunk[..4 - pad] {
            bits = bits << 6 | BASE64.iter().position(|b| b == c)? as u32;
        }
        bits <<= 6 * pad as u32;
        out.extend_from_slice(&[(bits >> 16) as u8, (bits >> 8) as u8, bits as u8][..3 - pad]);
    }
    Some(out)
}

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (n, b)| bits | u32::from(*b) << (16 - 8 * n));
        for n in 0..4 {
            out.push(if n <= chunk.len() { BASE64[(bits >> (18 - 6 * n)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_and_github_token_is_not_a_setting() {
        let found =
            referenced("a: ${{ vars.S3_BUCKET }} fleet.tfvars.json\nb: ${{ secrets.CLAWDINATOR_AGE_KEY }} ${{ secrets.GITHUB_TOKEN }}");
        let expected: BTreeSet<(Kind, String)> =
            [(Kind::Variable, "S3_BUCKET".to_string()), (Kind::Secret, "CLAWDINATOR_AGE_KEY".to_string())].into();
        assert_eq!(found, expected);
    }

    #[test]
    fn tfvars_name_what_they_lack() {
        let required = vec!["vpc_id".to_string(), "bucket_name".to_string()];
        assert_eq!(tfvars_problems(r#"{"vpc_id": "vpc-1"}"#, &required).unwrap(), ["bucket_name"]);
        assert!(tfvars_problems("[1]", &required).is_err());
    }

    /// A 64-byte nix secret key (bytes 0..64): its public half is bytes 32..64.
    const TEST_CACHE_KEY: &str =
        "clawdinator-cache-test-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

    #[test]
    fn a_cache_key_is_judged_by_its_form_and_shows_only_its_public_half() {
        let (name, public) = cache_key_public_half(TEST_CACHE_KEY).unwrap();
        assert_eq!(name, "clawdinator-cache-test-1");
        assert_eq!(public, "clawdinator-cache-test-1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
        let (_, public_key) = public.split_once(':').unwrap();
        for (bad, says) in [
            (public.as_str(), "a public key"),
            ("clawdinator-cache-test-1", "no colon"),
            (":AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==", "empty name"),
            ("k:not base64!", "not base64"),
            ("k:AAEC", "holds 3 bytes"),
            (&format!("{TEST_CACHE_KEY}\n"), "whitespace"),
        ] {
            let problem = cache_key_public_half(bad).unwrap_err();
            assert!(problem.contains(says), "{bad}: {problem}");
            assert!(
                !problem.contains(public_key) && !problem.contains("AAECAwQF"),
                "the problem quotes the key: {problem}"
            );
        }
        assert_eq!(base64_decode("AA=A"), None);
        assert_eq!(base64_decode("AA==AAAA"), None);
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
    }

    #[test]
    fn a_cache_bucket_is_a_bucket_name_not_a_url() {
        assert_eq!(bucket_name_problem("clawdinator-fleet-cache"), None);
        for bad in ["s3://clawdinator-fleet-cache", "Clawdinator", "a", "fleet..cache", "-fleet", "fleet/cache"] {
            assert!(bucket_name_problem(bad).is_some(), "{bad} passed");
        }
    }
}
