//! Deploy cooldowns, so that no bot can flood the fleet with deploys: a
//! bot's deploy takes two cooldowns at once, its own (`caller#<instance>`)
//! and the target's (`target#<target>`), in one DynamoDB transaction of
//! conditional puts; while either is in force the answer is 429 with when
//! to ask again. They live in a DynamoDB table, not in the function's
//! memory, so a new container (a cold start, a second concurrent one)
//! holds them too.
//!
//! Operators are never held (a rollback must go through), but their deploy
//! sets the target's cooldown, so that a bot cannot undo it at once.
//!
//! Each item is `key` (S), `expires` (N, epoch seconds; the table's TTL
//! attribute), `token` (S, who took it: a release only gives back its own)
//! and `holder` (S). DynamoDB deletes expired items lazily, days late at
//! worst, so an item's absence proves nothing and its presence neither:
//! every condition and every read compares `expires` with now.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use clawdinator::aws::error;

/// The table's name (OpenTofu: `clawdinator-control-api-cooldown`).
pub const TABLE_ENV: &str = "CLAWDINATOR_COOLDOWN_TABLE";
pub const CALLER_ENV: &str = "CLAWDINATOR_COOLDOWN_CALLER_SECONDS";
pub const TARGET_ENV: &str = "CLAWDINATOR_COOLDOWN_TARGET_SECONDS";

/// A target is held for 15 minutes after a deploy: a replacement (launch,
/// boot, the health checks the workflow waits for) takes several minutes,
/// and a second one queued meanwhile would cancel or repeat it.
pub const TARGET_SECONDS: i64 = 15 * 60;
/// A bot may ask for one deploy every 5 minutes, whatever the target: at
/// most 12 an hour, enough for a bot that finds a broken peer now and then,
/// too few to keep the deploy workflow busy.
pub const CALLER_SECONDS: i64 = 5 * 60;

/// Now, in epoch seconds. Injectable: tests move time instead of sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| clawdinator::clock::unix_seconds() as i64)
}

/// Attempts at a bot's transaction: DynamoDB cancels one that races another
/// on the same items (`TransactionConflict`), and nothing is held then.
const ATTEMPTS: usize = 3;

pub struct Cooldowns {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
    pub caller_seconds: i64,
    pub target_seconds: i64,
    pub clock: Clock,
}

/// A cooldown in force: which one, its item, when it ends, and who set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// `caller` or `target`.
    pub cooldown: &'static str,
    pub key: String,
    /// Epoch seconds: from then on the cooldown is over.
    pub until: i64,
    pub retry_after: i64,
    pub holder: String,
}

/// What a deploy took, so that a failed dispatch gives it back.
#[derive(Debug, Default)]
pub struct Grant {
    held: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    key: String,
    token: String,
    /// What the item was before (an operator overwrites a bot's): `expires` and `token`.
    previous: Option<(i64, String)>,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

/// A fresh token: 128 random bits, so that no two grants can be confused.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

type TransactError = aws_sdk_dynamodb::error::SdkError<
    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    aws_sdk_dynamodb::config::http::HttpResponse,
>;

/// Why DynamoDB cancelled a transaction, item by item (`ConditionalCheckFailed`,
/// `TransactionConflict`, `None` for an item that was not the cause); None
/// for any other error.
fn cancellation_codes(err: &TransactError) -> Option<Vec<Option<String>>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException;
    match err.as_service_error()? {
        TransactionCanceledException(c) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code().map(String::from)).collect())
        }
        _ => None,
    }
}

fn seconds_env(name: &str, default: i64) -> Result<i64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value
            .parse::<i64>()
            .ok()
            .filter(|s| *s > 0)
            .with_context(|| format!("{name}={value} is not a positive whole number of seconds")),
    }
}

impl Cooldowns {
    /// The default lengths and the system clock.
    pub fn new(aws: &clawdinator::aws::Aws, table: &str) -> Cooldowns {
        Cooldowns {
            dynamodb: aws.dynamodb(),
            table: table.to_string(),
            caller_seconds: CALLER_SECONDS,
            target_seconds: TARGET_SECONDS,
            clock: system_clock(),
        }
    }

    /// The table from [`TABLE_ENV`]; the lengths from [`CALLER_ENV`] and [`TARGET_ENV`] when set.
    pub fn from_env(aws: &clawdinator::aws::Aws) -> Result<Cooldowns> {
        let table = std::env::var(TABLE_ENV).with_context(|| {
            format!("the function's environment lacks {TABLE_ENV} (the deploy cooldown table OpenTofu creates)")
        })?;
        Ok(Cooldowns {
            caller_seconds: seconds_env(CALLER_ENV, CALLER_SECONDS)?,
            target_seconds: seconds_env(TARGET_ENV, TARGET_SECONDS)?,
            ..Cooldowns::new(aws, &table)
        })
    }

    fn item(&self, key: &str, expires: i64, token: &str, holder: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("key".to_string(), s(key)),
            ("expires".to_string(), n(expires)),
            ("token".to_string(), s(token)),
            ("holder".to_string(), s(holder)),
        ])
    }

    /// A put that succeeds only where no cooldown is in force.
    fn put_if_free(&self, key: &str, expires: i64, token: &str, holder: &str, now: i64) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.item(key, expires, token, holder)))
            .condition_expression("attribute_not_exists(#k) OR #e <= :now")
            .expression_attribute_names("#k", "key")
            .expression_attribute_names("#e", "expires")
            .expression_attribute_values(":now", n(now))
            .build()
            .context("a malformed cooldown put")?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A bot's deploy: its own cooldown and the target's, both or neither.
    /// `Ok(Err(busy))`: one is in force (the one ending last).
    pub async fn take_for_bot(&self, instance: &str, target: &str) -> Result<std::result::Result<Grant, Busy>> {
        let keys = [
            ("caller", format!("caller#{instance}"), self.caller_seconds),
            ("target", format!("target#{target}"), self.target_seconds),
        ];
        for _ in 0..ATTEMPTS {
            let now = (self.clock)();
            let token = new_token()?;
            let puts = keys
                .iter()
                .map(|(_, key, length)| self.put_if_free(key, now + length, &token, instance, now))
                .collect::<Result<Vec<_>>>()?;
            let err = match self.dynamodb.transact_write_items().set_transact_items(Some(puts)).send().await {
                Ok(_) => {
                    let held =
                        keys.iter().map(|(_, key, _)| Held { key: key.clone(), token: token.clone(), previous: None });
                    return Ok(Ok(Grant { held: held.collect() }));
                }
                Err(err) => err,
            };
            let Some(reasons) = cancellation_codes(&err) else {
                return Err(error("DynamoDB TransactWriteItems", &self.table, err));
            };
            let mut busy = Vec::new();
            for (i, (name, key, _)) in keys.iter().enumerate() {
                if reasons.get(i).is_some_and(|code| code.as_deref() == Some("ConditionalCheckFailed")) {
                    busy.extend(self.in_force(name, key).await?);
                }
            }
            if let Some(busy) = busy.into_iter().max_by_key(|b| b.until) {
                return Ok(Err(busy));
            }
            // A conflict with a concurrent request, or a cooldown that ended
            // between the put and the read: nothing is held; try again.
        }
        bail!(
            "DynamoDB cancelled the cooldown transaction on table {} {ATTEMPTS} times (concurrent requests for the same items); ask again",
            self.table
        )
    }

    /// The cooldown `key` if it is in force now (a consistent read: the
    /// transaction that just failed on it must be seen).
    async fn in_force(&self, cooldown: &'static str, key: &str) -> Result<Option<Busy>> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error("DynamoDB GetItem", &format!("{} key {key}", self.table), e))?;
        let now = (self.clock)();
        let Some(item) = out.item() else { return Ok(None) };
        let until = number(item, "expires").unwrap_or(0);
        Ok((until > now).then(|| Busy {
            cooldown,
            key: key.to_string(),
            until,
            retry_after: until - now,
            holder: text(item, "holder").unwrap_or_default(),
        }))
    }

    /// An operator's deploy: each target's cooldown set, whatever was there
    /// (the operator overrides a bot), the previous value kept for a release.
    pub async fn take_for_operator(&self, targets: &[String], holder: &str) -> Result<Grant> {
        let now = (self.clock)();
        let token = new_token()?;
        let mut grant = Grant::default();
        for target in targets {
            let key = format!("target#{target}");
            let put = self
                .dynamodb
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.item(&key, now + self.target_seconds, &token, holder)))
                .return_values(ReturnValue::AllOld)
                .send()
                .await
                .map_err(|e| error("DynamoDB PutItem", &format!("{} key {key}", self.table), e));
            match put {
                Ok(out) => {
                    let previous =
                        out.attributes().and_then(|old| Some((number(old, "expires")?, text(old, "token")?)));
                    grant.held.push(Held { key, token: token.clone(), previous });
                }
                Err(err) => {
                    // Half a grant is no grant: give back what was set.
                    let undo = self.release(&grant).await.err().map(|e| format!("; {e:#}")).unwrap_or_default();
                    return Err(err.context(format!("the cooldowns set before it were released{undo}")));
                }
            }
        }
        Ok(grant)
    }

    /// Give back what `grant` took (its dispatch failed), each item only if
    /// it is still the grant's own: a later holder's cooldown stays.
    pub async fn release(&self, grant: &Grant) -> Result<()> {
        let mut failures = Vec::new();
        for held in &grant.held {
            let (expires, token) = held.previous.clone().unwrap_or((0, "released".into()));
            let out = self
                .dynamodb
                .update_item()
                .table_name(&self.table)
                .key("key", s(&held.key))
                .update_expression("SET #e = :e, #t = :t")
                .condition_expression("#t = :mine")
                .expression_attribute_names("#e", "expires")
                .expression_attribute_names("#t", "token")
                .expression_attribute_values(":e", n(expires))
                .expression_attribute_values(":t", s(&token))
                .expression_attribute_values(":mine", s(&held.token))
                .send()
                .await;
            match out {
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => failures.push(format!(
                    "{:#}",
                    error("DynamoDB UpdateItem", &format!("{} key {}", self.table, held.key), e)
                )),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("the cooldowns could not be released (they end on their own): {}", failures.join("; "))
        }
    }
}
