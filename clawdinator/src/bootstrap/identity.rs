//! Each instance's age identity, kept apart from its bundle: in Secrets
//! Manager as `clawdinator/<instance>/age-identity`, which only that
//! instance's role may read. A bundle holds ciphertext only, so whoever reads
//! `bootstrap/<instance>/` (CI, a principal with `s3:GetObject` there) reads
//! nothing of the secrets.
//!
//! `bootstrap upload` never reads an identity (CI may not): it learns every
//! instance's public key from one paginated `ListSecrets` (the
//! `clawdinator:age-recipient` tag), creates the missing ones and rotates on
//! request. `bootstrap fetch` reads exactly the version its manifest names.
//!
//! Every identity is stored under a VersionId derived from its public key
//! ([`version_for`]). The listing shows the recipient tag and the current
//! version side by side, so a rotation stopped between its two writes
//! (PutSecretValue, then TagResource) is seen as such, never trusted: the
//! tag's recipient would not open what the current version names.

use std::collections::{BTreeMap, HashMap};

use age::secrecy::ExposeSecret;
use anyhow::{bail, ensure, Context, Result};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_sdk_secretsmanager::Client;
use futures::StreamExt;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::aws::{self, Aws};
use crate::secrets::manager::{identity_name, PREFIX, TAG_INSTANCE};

/// The tag that carries an identity's public key (`age1…`).
pub const TAG_RECIPIENT: &str = "clawdinator:age-recipient";
const SUFFIX: &str = "/age-identity";

/// The VersionId (and ClientRequestToken) an identity is stored under: a
/// UUID-shaped digest of its public key. Public key in, public id out.
pub fn version_for(recipient: &str) -> String {
    let h = crate::digest::sha256_hex(format!("clawdinator age identity v1\n{recipient}").as_bytes());
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// What the listing (or DescribeSecret) says of one identity secret.
#[derive(Debug, Clone, Default)]
struct Listed {
    recipient: Option<String>,
    /// The version staged AWSCURRENT.
    current: Option<String>,
}

impl Listed {
    fn new(tags: &[Tag], versions: Option<&HashMap<String, Vec<String>>>) -> Listed {
        let recipient =
            tags.iter().find(|t| t.key() == Some(TAG_RECIPIENT)).and_then(|t| t.value()).map(str::to_string);
        let current = versions
            .and_then(|v| v.iter().find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT")))
            .map(|(id, _)| id.clone());
        Listed { recipient, current }
    }

    /// (version, recipient) of the identity in force, when the tag and the
    /// current version agree.
    fn consistent(&self) -> Option<(String, String)> {
        let (recipient, current) = (self.recipient.as_ref()?, self.current.as_ref()?);
        (version_for(recipient) == *current).then(|| (current.clone(), recipient.clone()))
    }
}

/// Every identity secret of the fleet, by instance: one paginated
/// ListSecrets, however many instances (tags come back in the listing).
/// Secrets pending deletion are not listed (AWS's default).
async fn list(sm: &Client) -> Result<BTreeMap<String, Listed>> {
    let mut found = BTreeMap::new();
    let filter = Filter::builder().key(FilterNameStringType::Name).values(PREFIX).build();
    let mut pages = sm.list_secrets().filters(filter).max_results(100).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::error("Secrets Manager ListSecrets", PREFIX, e))?;
        for s in page.secret_list() {
            let instance = s.name().and_then(|n| n.strip_prefix(PREFIX)).and_then(|n| n.strip_suffix(SUFFIX));
            if let Some(instance) = instance.filter(|i| !i.contains('/') && s.deleted_date().is_none()) {
                found.insert(instance.to_string(), Listed::new(s.tags(), s.secret_versions_to_stages()));
            }
        }
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityAction {
    Create,
    Rotate,
    Keep,
}

/// One instance's identity in this run (public facts only).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRow {
    pub instance: String,
    pub secret: String,
    pub action: IdentityAction,
    /// The Secrets Manager VersionId the bundle's manifest names.
    pub version: String,
    /// The identity's public key, the bundle's one recipient.
    pub recipient: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One instance's identity: what the run does with it, and for a new one
/// the identity itself, in memory until written.
pub struct Planned {
    pub row: IdentityRow,
    fresh: Option<age::x25519::Identity>,
}

impl Planned {
    fn fresh(instance: &str, action: IdentityAction, note: Option<String>) -> Planned {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let row = IdentityRow {
            instance: instance.to_string(),
            secret: identity_name(instance),
            action,
            version: version_for(&recipient),
            recipient,
            note,
        };
        Planned { row, fresh: Some(identity) }
    }

    fn tags(&self) -> Vec<Tag> {
        [
            ("app", "clawdinator"),
            (TAG_INSTANCE, self.row.instance.as_str()),
            (TAG_RECIPIENT, self.row.recipient.as_str()),
        ]
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .to_vec()
    }

    /// The identity as stored (SecretString): `AGE-SECRET-KEY-1…`.
    fn value(&self) -> Result<Zeroizing<String>> {
        let identity = self.fresh.as_ref().context("internal: no new identity to write")?;
        Ok(Zeroizing::new(identity.to_string().expose_secret().to_string()))
    }
}

/// The public key an instance's secrets are encrypted to.
pub fn recipient(row: &IdentityRow) -> Result<age::x25519::Recipient> {
    row.recipient
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: tag {TAG_RECIPIENT} is not an age recipient: {e}", row.secret))
}

/// Read what Secrets Manager holds for `instances` and decide each one's
/// identity: kept, created (missing), or rotated (asked, or found torn).
pub async fn plan(aws: &Aws, instances: &[String], rotate: bool) -> Result<Vec<Planned>> {
    let listed = list(&aws.secrets_manager()).await?;
    Ok(instances.iter().map(|name| plan_one(name, listed.get(name), rotate)).collect())
}

fn plan_one(name: &str, listed: Option<&Listed>, rotate: bool) -> Planned {
    let Some(listed) = listed else { return Planned::fresh(name, IdentityAction::Create, None) };
    match listed.consistent() {
        Some(_) if rotate => Planned::fresh(name, IdentityAction::Rotate, None),
        Some((version, recipient)) => Planned {
            row: IdentityRow {
                instance: name.to_string(),
                secret: identity_name(name),
                action: IdentityAction::Keep,
                version,
                recipient,
                note: None,
            },
            fresh: None,
        },
        None => Planned::fresh(
            name,
            IdentityAction::Rotate,
            Some(format!("its {TAG_RECIPIENT} tag and current version disagree (a rotation stopped midway)")),
        ),
    }
}

/// What writing one identity came to.
enum Written {
    Done,
    /// Another run created it first: use that one (never a second identity).
    Adopted {
        version: String,
        recipient: String,
    },
}

/// Write every new identity (creates and rotations), each to completion
/// even when another fails, so the caller knows exactly what exists.
/// Returns the secrets this run created, and the first error.
pub async fn write(aws: &Aws, planned: &mut [Planned], concurrency: usize) -> (Vec<String>, Option<anyhow::Error>) {
    let sm = aws.secrets_manager();
    let results: Vec<(usize, Result<Written>)> = futures::stream::iter(planned.iter().enumerate())
        .map(|(i, p)| {
            let sm = sm.clone();
            async move { (i, write_one(&sm, p).await) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let (mut created, mut first_error) = (Vec::new(), None);
    for (i, result) in results {
        let p = &mut planned[i];
        match result {
            Ok(Written::Done) if p.row.action == IdentityAction::Create => created.push(p.row.secret.clone()),
            Ok(Written::Done) => {}
            Ok(Written::Adopted { version, recipient }) => {
                p.row = IdentityRow {
                    action: IdentityAction::Keep,
                    version,
                    recipient,
                    note: Some("created by another run at the same time: that one is used".into()),
                    ..p.row.clone()
                };
                p.fresh = None;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    created.sort();
    (created, first_error)
}

async fn write_one(sm: &Client, p: &Planned) -> Result<Written> {
    let secret = p.row.secret.as_str();
    match p.row.action {
        IdentityAction::Keep => Ok(Written::Done),
        IdentityAction::Create => {
            let value = p.value()?;
            let created = sm
                .create_secret()
                .name(secret)
                .secret_string(value.as_str())
                .client_request_token(&p.row.version)
                .set_tags(Some(p.tags()))
                .description(
                    "age identity of this instance's bootstrap bundle; managed by cargo xtask bootstrap upload",
                )
                .send()
                .await;
            match created {
                Ok(_) => Ok(Written::Done),
                // AWS: ResourceExistsException when it exists,
                // InvalidRequestException when it is pending deletion.
                Err(e)
                    if matches!(aws::error_code(&e), Some("ResourceExistsException" | "InvalidRequestException")) =>
                {
                    adopt(sm, p).await
                }
                Err(e) => Err(aws::error("Secrets Manager CreateSecret", secret, e)),
            }
        }
        IdentityAction::Rotate => {
            let value = p.value()?;
            sm.put_secret_value()
                .secret_id(secret)
                .secret_string(value.as_str())
                .client_request_token(&p.row.version)
                .send()
                .await
                .map_err(|e| aws::error("Secrets Manager PutSecretValue", secret, e))?;
            sm.tag_resource()
                .secret_id(secret)
                .set_tags(Some(p.tags()))
                .send()
                .await
                .map_err(|e| aws::error("Secrets Manager TagResource", secret, e))?;
            Ok(Written::Done)
        }
    }
}

/// CreateSecret found the name taken since the listing: describe it and
/// use it when whole; never write a second identity over it.
async fn adopt(sm: &Client, p: &Planned) -> Result<Written> {
    let secret = p.row.secret.as_str();
    let described = sm
        .describe_secret()
        .secret_id(secret)
        .send()
        .await
        .map_err(|e| aws::error("Secrets Manager DescribeSecret", secret, e))?;
    if described.deleted_date().is_some() {
        bail!(
            "{secret} is scheduled for deletion: restore it (`aws secretsmanager restore-secret --secret-id {secret}`) \
             or wait until it is deleted, then re-run `cargo xtask bootstrap upload`"
        );
    }
    let listed = Listed::new(described.tags(), described.version_ids_to_stages());
    let (version, recipient) = listed.consistent().with_context(|| {
        format!(
            "{secret} appeared during this run with a {TAG_RECIPIENT} tag that does not match its current version: \
             run `cargo xtask bootstrap upload --rotate-identity --instance {}`",
            p.row.instance
        )
    })?;
    Ok(Written::Adopted { version, recipient })
}

/// Remove an identity this very run created (no manifest names it): at
/// once, without the recovery window, so a re-run can create it again.
pub async fn remove_created(aws: &Aws, secret: &str) -> Result<()> {
    aws.secrets_manager()
        .delete_secret()
        .secret_id(secret)
        .force_delete_without_recovery(true)
        .send()
        .await
        .map_err(|e| aws::error("Secrets Manager DeleteSecret", secret, e))?;
    Ok(())
}

/// Host side: the identity a manifest names, as the text of an identity
/// file. Checked to be the manifest's recipient before anything is written.
pub async fn read(aws: &Aws, instance: &str, version: &str, recipient: &str) -> Result<Zeroizing<String>> {
    let secret = identity_name(instance);
    let fix = format!(
        "cannot read this host's age identity {secret} (version {version}) with the instance role: \
         if it or that version is gone, run `cargo xtask bootstrap upload --instance {instance}` to create one and rebuild the bundle"
    );
    let out = aws
        .secrets_manager()
        .get_secret_value()
        .secret_id(&secret)
        .version_id(version)
        .send()
        .await
        .map_err(|e| aws::error("Secrets Manager GetSecretValue", &secret, e))
        .context(fix)?;
    let text = Zeroizing::new(out.secret_string().unwrap_or_default().trim().to_string());
    // The parse error could echo key material: say only which secret it is.
    let identity: age::x25519::Identity = text.parse().map_err(|_| {
        anyhow::anyhow!(
            "{secret} version {version} is not an age identity (AGE-SECRET-KEY-1…): \
             run `cargo xtask bootstrap upload --rotate-identity --instance {instance}`"
        )
    })?;
    ensure!(
        identity.to_public().to_string() == recipient,
        "{secret} version {version} is not the identity this bundle was encrypted to ({recipient}): \
         run `cargo xtask bootstrap upload --instance {instance}` to rebuild the bundle"
    );
    Ok(Zeroizing::new(format!("{}\n", identity.to_string().expose_secret())))
}
