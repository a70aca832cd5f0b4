//! Who writes where in the bucket's `audit/`. Each writer has a prefix of
//! its own, and the fleet bucket's policy lets only that writer's role put
//! objects there (infra/opentofu/aws/policies/bucket.json.tftpl). A record
//! proves nothing about its author by what it says: anyone who may write
//! somewhere under `audit/` can write a well-chained line that claims any
//! caller and command. So the verifier holds each copy to its prefix: the
//! control API's records only under its prefix, the CI role's only under
//! CI's, and nothing else claims to be either.

use anyhow::{bail, Result};

/// Where every writer's copies go in the bucket.
pub const PREFIX: &str = "audit/";

/// The roles OpenTofu creates for the two writers that are not people.
pub const CI_ROLE: &str = "clawdinator-ci";
pub const CONTROL_API_ROLE: &str = "clawdinator-control-api";
/// The command every control API record carries.
pub const CONTROL_API_COMMAND: &str = "control-api";

/// The writers' prefixes, below [`PREFIX`].
pub const CI: &str = "audit/ci/";
pub const OPERATORS: &str = "audit/operators/";
pub const CONTROL_API: &str = "audit/control-api/";

/// The role of an assumed-role session ARN
/// (`arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
fn session_role(caller: &str) -> Option<&str> {
    let (_, path) = caller.split_once(":assumed-role/")?;
    path.split_once('/').map(|(role, _)| role)
}

/// Where a command-line writer's copies go: the CI role's under `audit/ci/`,
/// everyone else's (operators') under `audit/operators/`.
pub fn prefix_for(caller: &str) -> &'static str {
    match session_role(caller) {
        Some(CI_ROLE) => CI,
        _ => OPERATORS,
    }
}

/// What a record says of its writer: its command, its phase and its caller.
pub struct Claim<'a> {
    pub command: &'a str,
    pub phase: &'a str,
    pub caller: &'a str,
}

/// Refuse a copy whose record claims a writer its prefix does not belong to.
/// `audit/<yyyy>/…` holds the copies written before writers had prefixes:
/// nobody may write there now, and no control API record was ever there.
pub fn check(key: &str, record: &Claim<'_>) -> Result<()> {
    let claims_control_api = record.command == CONTROL_API_COMMAND;
    let claims_ci = session_role(record.caller) == Some(CI_ROLE);
    let why = if let Some(rest) = key.strip_prefix(CONTROL_API) {
        (!claims_control_api || rest.is_empty()).then_some("only control API records belong under audit/control-api/")
    } else if key.starts_with(CI) {
        (claims_control_api || !claims_ci).then_some("only the CI role's records belong under audit/ci/")
    } else if key.starts_with(OPERATORS) || is_legacy(key) {
        if claims_control_api {
            Some("a control API record outside audit/control-api/ is forged: only the control API writes those")
        } else if claims_ci && !is_legacy(key) {
            Some("a CI record outside audit/ci/ is forged: the CI role writes only there")
        } else {
            None
        }
    } else {
        Some("this is no writer's prefix (audit/ci/, audit/operators/ or audit/control-api/)")
    };
    match why {
        Some(why) => bail!(
            "{key}: {} {} by {}: {why}; the record was written by someone it does not name (remove it once investigated)",
            record.command,
            record.phase,
            record.caller
        ),
        None => Ok(()),
    }
}

/// `audit/<yyyy>/…`: a copy from before the writers' prefixes.
fn is_legacy(key: &str) -> bool {
    key.strip_prefix(PREFIX).and_then(|rest| rest.get(..5)).is_some_and(|y| {
        let (digits, slash) = y.split_at(4);
        digits.bytes().all(|b| b.is_ascii_digit()) && slash == "/"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(command: &'a str, caller: &'a str) -> Claim<'a> {
        Claim { command, phase: "started", caller }
    }

    const CI_CALLER: &str = "arn:aws:sts::123456789012:assumed-role/clawdinator-ci/GitHubActions";
    const BOT: &str = "arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-1/i-0abc";
    const ALICE: &str = "arn:aws:iam::123456789012:user/alice";

    #[test]
    fn each_writer_is_held_to_its_prefix() {
        let key = |p: &str| format!("{p}2026/12/03/20261203T010000-abc.json");
        let ok = [
            (key(CONTROL_API), record("control-api", BOT)),
            (key(CI), record("bootstrap upload", CI_CALLER)),
            (key(OPERATORS), record("fleet deploy", ALICE)),
            ("audit/2026/11/22/x-abc.json".to_string(), record("fleet deploy", CI_CALLER)),
        ];
        for (key, r) in &ok {
            check(key, r).unwrap_or_else(|e| panic!("{key}: {e:#}"));
        }
        let forged = [
            (key(CI), record("control-api", BOT)),
            (key(OPERATORS), record("control-api", BOT)),
            ("audit/2026/12/03/x-abc.json".to_string(), record("control-api", BOT)),
            (key(CONTROL_API), record("fleet deploy", CI_CALLER)),
            (key(CI), record("fleet deploy", ALICE)),
            (key(OPERATORS), record("fleet deploy", CI_CALLER)),
            ("audit/elsewhere/x-abc.json".to_string(), record("fleet deploy", ALICE)),
        ];
        for (key, r) in &forged {
            let err = check(key, r).expect_err(key).to_string();
            assert!(err.starts_with(key.as_str()), "the error names the key: {err}");
        }
    }

    #[test]
    fn the_cli_writes_where_its_role_may() {
        assert_eq!(prefix_for(CI_CALLER), CI);
        assert_eq!(prefix_for(ALICE), OPERATORS);
        assert_eq!(prefix_for("arn:aws:sts::1:assumed-role/clawdinator-ci-not/x"), OPERATORS);
    }
}
