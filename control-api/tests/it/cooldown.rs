//! Deploy cooldowns, attacked: a bot flooding the control API with deploys
//! (concurrently and one after another), a second bot piling onto the same
//! target, a bot undoing an operator's deploy, a restart hoped to forget,
//! a failed dispatch, and DynamoDB down. Time is the test's clock, moved
//! by hand, never slept.

use crate::common::{config, cooldowns, COOLDOWN_TABLE};
use crate::handler::{Answer, Api, BOT1};
use clawdinator_control_api::cooldown::{CALLER_SECONDS, TARGET_SECONDS};
use serde_json::{json, Value};

const BOT2: &str = "arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-2/i-0223456789abcdef0";
const BOT3: &str = "arn:aws:sts::123456789012:assumed-role/clawdinator-instance-clawdinator-3/i-0323456789abcdef0";
const ALICE: &str = "arn:aws:iam::123456789012:user/alice";

fn deploy(target: &str) -> Value {
    json!({"action": "deploy", "target": target})
}

/// A 429 that names `cooldown` and says, in the header and the body, to wait `seconds`.
fn assert_held(answer: &Answer, cooldown: &str, seconds: i64) {
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.body["cooldown"], cooldown, "{}", answer.body);
    assert_eq!(answer.retry_after, Some(seconds), "{}", answer.body);
    assert_eq!(answer.body["retryAfter"], seconds, "{}", answer.body);
    let error = answer.body["error"].as_str().unwrap();
    assert!(error.contains(&format!("ask again in {seconds} s")), "{error}");
}

/// The `expires` of a cooldown item, read straight from the table.
async fn expires(api: &Api, key: &str) -> Option<i64> {
    let out = api
        .aws
        .dynamodb()
        .get_item()
        .table_name(COOLDOWN_TABLE)
        .key("key", aws_sdk_dynamodb::types::AttributeValue::S(key.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    Some(out.item()?.get("expires")?.as_n().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_deploys_from_one_bot_dispatch_once() {
    let api = Api::start().await;
    let asks = (0..50).map(|_| api.request(Some(BOT1), deploy("clawdinator-2")));
    let answers = futures::future::join_all(asks).await;
    let done: Vec<&Answer> = answers.iter().filter(|a| a.status == 202).collect();
    assert_eq!(done.len(), 1, "{:?}", answers.iter().map(|a| &a.body).collect::<Vec<_>>());
    // Both cooldowns hold the others; the answer names the one ending last.
    for answer in answers.iter().filter(|a| a.status != 202) {
        assert_held(answer, "target", TARGET_SECONDS);
    }
    let seen = api.dispatches();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].2["inputs"]["lane"], "bot");
    // Every refusal is in the audit trail, with its reason.
    let (records, _) = api.records().await;
    let refused = records.iter().filter(|r| r["result"].as_str().is_some_and(|r| r.starts_with("429: "))).count();
    assert_eq!(refused, 49);
}

/// The same race without the audit trail's writes between the requests:
/// fifty takes of the same cooldowns at once, straight at DynamoDB.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_simultaneous_takes_of_the_cooldowns_grant_one() {
    let api = Api::start().await;
    let cooldowns = cooldowns(&api.aws, &api.clock);
    let takes = (0..50).map(|_| cooldowns.take_for_bot("clawdinator-1", "clawdinator-2"));
    let outcomes = futures::future::join_all(takes).await;
    let granted = outcomes.iter().filter(|o| matches!(o, Ok(Ok(_)))).count();
    let held = outcomes.iter().filter(|o| matches!(o, Ok(Err(busy)) if busy.cooldown == "target")).count();
    assert_eq!((granted, held), (1, 49), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_deploys_from_one_bot_within_a_minute_dispatch_once_whatever_the_target() {
    let api = Api::start().await;
    let mut dispatched = 0;
    for i in 0..50 {
        // Alternating targets: the bot's own cooldown holds what the target's does not.
        let target = if i % 2 == 0 { "clawdinator-2" } else { "clawdinator-3" };
        let answer = api.request(Some(BOT1), deploy(target)).await;
        match (i, target) {
            (0, _) => assert_eq!(answer.status, 202, "{}", answer.body),
            (_, "clawdinator-2") => assert_held(&answer, "target", TARGET_SECONDS - i),
            _ => assert_held(&answer, "caller", CALLER_SECONDS - i),
        }
        dispatched += api.dispatches().len();
        api.clock.advance(1);
    }
    assert_eq!(dispatched, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_bot_is_held_by_the_target_cooldown_and_a_refused_bot_holds_nothing() {
    let api = Api::start().await;
    assert_eq!(api.request(Some(BOT1), deploy("clawdinator-3")).await.status, 202);
    let answer = api.request(Some(BOT2), deploy("clawdinator-3")).await;
    assert_held(&answer, "target", TARGET_SECONDS);
    assert!(answer.body["error"].as_str().unwrap().contains("at clawdinator-1's request"), "{}", answer.body);
    // The refused transaction took nothing: bot 2's own cooldown is free.
    assert_eq!(expires(&api, "caller#clawdinator-2").await, None);
    let answer = api.request(Some(BOT2), deploy("clawdinator-1")).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(api.dispatches().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_goes_through_a_bots_cooldown_in_its_own_lane_and_holds_the_target() {
    let api = Api::start().await;
    assert_eq!(api.request(Some(BOT1), deploy("clawdinator-2")).await.status, 202);
    assert_eq!(api.dispatches()[0].2["inputs"]["lane"], "bot");
    // A rollback during the bot's cooldowns, and another: never held.
    api.clock.advance(60);
    for _ in 0..2 {
        let answer = api.request(Some(ALICE), deploy("clawdinator-2")).await;
        assert_eq!((answer.status, &answer.body["lane"]), (202, &json!("operator")), "{}", answer.body);
        let seen = api.dispatches();
        assert_eq!((seen.len(), &seen[0].2["inputs"]["lane"]), (1, &json!("operator")));
        assert_eq!(seen[0].2["inputs"]["caller"], ALICE);
    }
    // Once the bot's own cooldown is over, the operator's still holds the target
    // against it: the rollback is not undone.
    api.clock.advance(CALLER_SECONDS);
    let answer = api.request(Some(BOT1), deploy("clawdinator-2")).await;
    assert_held(&answer, "target", TARGET_SECONDS - CALLER_SECONDS);
    assert!(answer.body["error"].as_str().unwrap().contains("by an operator"), "{}", answer.body);
    // Deploying all holds every instance.
    assert_eq!(api.request(Some(ALICE), deploy("all")).await.status, 202);
    assert_held(&api.request(Some(BOT3), deploy("clawdinator-1")).await, "target", TARGET_SECONDS);
    assert_eq!(api.dispatches().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_a_cooldown_ends_the_bot_may_deploy_again_though_the_item_is_still_there() {
    let api = Api::start().await;
    let start = api.clock.now();
    assert_eq!(api.request(Some(BOT1), deploy("clawdinator-2")).await.status, 202);
    api.clock.advance(CALLER_SECONDS - 1);
    assert_held(&api.request(Some(BOT1), deploy("clawdinator-3")).await, "caller", 1);
    api.clock.advance(1);
    assert_eq!(api.request(Some(BOT1), deploy("clawdinator-3")).await.status, 202);

    api.clock.advance(TARGET_SECONDS - CALLER_SECONDS - 1);
    assert_held(&api.request(Some(BOT3), deploy("clawdinator-2")).await, "target", 1);
    api.clock.advance(1);
    // DynamoDB's TTL deletes late: the expired item is still in the table,
    // and its time, not its absence, frees it.
    assert_eq!(expires(&api, "target#clawdinator-2").await, Some(start + TARGET_SECONDS));
    assert_eq!(api.request(Some(BOT3), deploy("clawdinator-2")).await.status, 202);
    assert_eq!(api.dispatches().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_function_keeps_the_cooldowns() {
    let api = Api::start().await;
    assert_eq!(api.request(Some(BOT1), deploy("clawdinator-2")).await.status, 202);
    // A new container: its own AWS configuration, client and configuration.
    let settings = clawdinator::aws::Settings::local(&api.emulator.endpoint());
    let fresh = clawdinator::aws::Aws::load(&settings).await.unwrap();
    let restarted = config(cooldowns(&fresh, &api.clock));
    assert_held(&api.request_with(&restarted, Some(BOT1), deploy("clawdinator-3")).await, "caller", CALLER_SECONDS);
    assert_held(&api.request_with(&restarted, Some(BOT3), deploy("clawdinator-2")).await, "target", TARGET_SECONDS);
    assert_eq!(api.dispatches().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dispatch_gives_its_cooldown_back_and_says_so() {
    let api = Api::start().await;
    api.fleet.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let answer = api.request(Some(BOT1), deploy("clawdinator-2")).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(answer.body["error"].as_str().unwrap().contains("its cooldown was released"), "{}", answer.body);
    let (records, _) = api.records().await;
    let result = records.last().unwrap()["result"].as_str().unwrap().to_string();
    assert!(result.starts_with("502: ") && result.contains("its cooldown was released"), "{result}");

    // A bot holds the target; an operator's deploy that fails puts the bot's cooldown back, not nothing.
    api.fleet.broken.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(api.request(Some(BOT1), deploy("clawdinator-2")).await.status, 202, "the retry was locked out");
    api.fleet.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    api.clock.advance(10);
    assert_eq!(api.request(Some(ALICE), deploy("clawdinator-2")).await.status, 502);
    assert_held(&api.request(Some(BOT3), deploy("clawdinator-2")).await, "target", TARGET_SECONDS - 10);
    assert_eq!(api.dispatches().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_down_is_503_and_nothing_is_dispatched() {
    let api = Api::start().await;
    let fault = |operation: &str| json!([{"operation": operation, "times": -1, "status": 500, "code": "InternalServerError", "message": "Internal server error"}]);
    for (operation, arn, target) in
        [("TransactWriteItems", BOT1, "clawdinator-2"), ("PutItem", ALICE, "clawdinator-2"), ("PutItem", ALICE, "all")]
    {
        api.emulator.inject(fault(operation)).unwrap();
        let answer = api.request(Some(arn), deploy(target)).await;
        assert_eq!(answer.status, 503, "{operation}: {}", answer.body);
        let error = answer.body["error"].as_str().unwrap();
        assert!(error.contains(COOLDOWN_TABLE) && error.contains("nothing was dispatched"), "{error}");
        assert!(api.dispatches().is_empty(), "{operation}: dispatched without a cooldown");
        api.emulator.clear_faults().unwrap();
    }
    let (records, _) = api.records().await;
    assert_eq!(records.iter().filter(|r| r["result"].as_str().is_some_and(|r| r.starts_with("503: "))).count(), 3);

    // A table that is not there (or not the function's to use): the same.
    let mut missing = api.config();
    missing.cooldowns.table = "clawdinator-no-such-table".into();
    let answer = api.request_with(&missing, Some(BOT1), deploy("clawdinator-2")).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body["error"].as_str().unwrap().contains("clawdinator-no-such-table"), "{}", answer.body);
    assert!(api.dispatches().is_empty());

    // Once DynamoDB answers, the bot's deploy goes through: the failures held nothing.
    assert_eq!(api.request(Some(BOT1), deploy("clawdinator-2")).await.status, 202);
}
