//! `host github-sync`: the organisation's open pull requests and issues, as
//! plain facts, into shared memory (`github/prs.md`, `github/issues.md`)
//! for the agents to reason about (the triage skill reads them). Read with
//! the installation token the token unit refreshes (`GITHUB_TOKEN`): the
//! repositories from REST, their pull requests and issues from GraphQL,
//! which alone gives a pull request's review decision and mergeability
//! in the same page as the rest. Every page is read before anything is
//! written; each file is then replaced whole through the memory lock, so a
//! failed run leaves the last snapshot as it was. Nothing is judged or
//! filtered here.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::flags::GithubSyncArgs;
use crate::ctx::Ctx;
use crate::github::{self, Reply};

/// At most this many pages (100 items each) of one list: a list longer
/// than that is an error named, never a silent cut.
pub const MAX_PAGES: u32 = 100;

/// A rate-limited page is retried after GitHub's wait only when that wait
/// is this short; a longer one ends the run (the timer comes back in 15
/// minutes, and a unit asleep for an hour helps nobody).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// GraphQL points left for the bots: below this the snapshot stops rather
/// than spend the installation's hourly budget the agents share.
pub const RESERVE: u64 = 500;

#[derive(Debug, Deserialize)]
struct Repo {
    full_name: String,
    #[serde(default)]
    archived: bool,
}

#[derive(Debug, Deserialize)]
struct Login {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Count {
    #[serde(rename = "totalCount")]
    total: u64,
}

#[derive(Debug, Deserialize)]
struct Labels {
    nodes: Vec<Label>,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

/// What pull requests and issues share.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    number: u64,
    title: String,
    url: String,
    author: Option<Login>,
    created_at: String,
    updated_at: String,
    labels: Labels,
    comments: Count,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullRequest {
    #[serde(flatten)]
    common: Common,
    is_draft: bool,
    review_decision: Option<String>,
    mergeable: Option<String>,
    merge_state_status: Option<String>,
    review_threads: Count,
}

#[derive(Debug, Deserialize)]
struct Issue {
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection<T> {
    page_info: PageInfo,
    nodes: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimit {
    remaining: u64,
    reset_at: String,
}

const ITEM_FIELDS: &str = "number title url createdAt updatedAt author { login } \
     labels(first: 20) { nodes { name } } comments { totalCount }";

/// One page of a repository's open pull requests or issues; `CONNECTION`
/// and `EXTRA` are filled in by [`query`].
const QUERY: &str = "query($owner: String!, $name: String!, $after: String) { \
     rateLimit { remaining resetAt } \
     repository(owner: $owner, name: $name) { \
     CONNECTION(states: OPEN, first: 100, after: $after, orderBy: {field: CREATED_AT, direction: ASC}) { \
     pageInfo { hasNextPage endCursor } nodes { FIELDS EXTRA } } } }";

fn query(connection: &str) -> String {
    let extra = if connection == "pullRequests" {
        "isDraft reviewDecision mergeable mergeStateStatus reviewThreads { totalCount }"
    } else {
        ""
    };
    QUERY.replace("CONNECTION", connection).replace("FIELDS", ITEM_FIELDS).replace("EXTRA", extra)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub org: String,
    pub repos: usize,
    pub pull_requests: usize,
    pub issues: usize,
    /// Requests made (pages read, retries included).
    pub requests: usize,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} open pull request(s), {} open issue(s) in {} repositories ({} requests)",
            self.org, self.pull_requests, self.issues, self.repos, self.requests
        )
    }
}

/// Where the two APIs live: GitHub's, or an Enterprise server's
/// (`https://HOST/api/v3` for REST, `https://HOST/api/graphql` for GraphQL).
struct Api<'a> {
    rest: String,
    graphql: String,
    token: &'a str,
    requests: usize,
}

impl<'a> Api<'a> {
    fn new(api: &str, token: &'a str) -> Api<'a> {
        let rest = api.trim_end_matches('/').to_string();
        let graphql = match rest.strip_suffix("/api/v3") {
            Some(host) => format!("{host}/api/graphql"),
            None => format!("{rest}/graphql"),
        };
        Api { rest, graphql, token, requests: 0 }
    }
}

/// One request, bounded to 30 s; the bearer token never reaches an error.
async fn exchange(method: hyper::Method, url: &str, token: &str, body: Option<String>) -> Result<Reply> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        // mergeStateStatus was long behind this preview; GitHub ignores it where it is not needed.
        .header("Accept", "application/vnd.github+json, application/vnd.github.merge-info-preview+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .header("User-Agent", "clawdinator-github-sync")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .with_context(|| format!("bad GitHub API URL {url}"))?;
    github::exchange(request).await
}

fn header(reply: &Reply, name: &str) -> Option<u64> {
    reply.headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long GitHub asks us to wait, when the answer is a rate limit:
/// `Retry-After`, else until `x-ratelimit-reset` when none is left, else a
/// minute (GitHub's advice for a secondary limit without either).
fn rate_limited(reply: &Reply, now: u64) -> Option<u64> {
    let graphql_limited = reply.status.is_success()
        && serde_json::from_slice::<serde_json::Value>(&reply.body)
            .is_ok_and(|v| v["errors"].as_array().is_some_and(|e| e.iter().any(|e| e["type"] == "RATE_LIMITED")));
    let limited = graphql_limited
        || reply.status == hyper::StatusCode::TOO_MANY_REQUESTS
        || (reply.status == hyper::StatusCode::FORBIDDEN
            && (header(reply, "retry-after").is_some()
                || header(reply, "x-ratelimit-remaining") == Some(0)
                || github::message(&reply.body).to_lowercase().contains("rate limit")));
    if !limited {
        return None;
    }
    let until_reset = (header(reply, "x-ratelimit-remaining") == Some(0))
        .then(|| header(reply, "x-ratelimit-reset").map(|reset| reset.saturating_sub(now)))
        .flatten();
    Some(header(reply, "retry-after").or(until_reset).unwrap_or(60))
}

/// One page (`what` names it in every error), retried after a short rate
/// limit wait, at most twice; any other failure is the run's.
async fn page(api: &mut Api<'_>, url: &str, body: Option<String>, what: &str) -> Result<Bytes> {
    for attempt in 0.. {
        api.requests += 1;
        let method = if body.is_some() { hyper::Method::POST } else { hyper::Method::GET };
        let reply = exchange(method, url, api.token, body.clone()).await.with_context(|| format!("reading {what}"))?;
        if let Some(wait) = rate_limited(&reply, crate::clock::unix_seconds()) {
            let wait = Duration::from_secs(wait);
            if wait > MAX_WAIT || attempt == 2 {
                bail!(
                    "GitHub's rate limit stopped {what}: it asks for {} s more; the last snapshot stays and the next run tries again",
                    wait.as_secs()
                );
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        if !reply.status.is_success() {
            bail!("GitHub answered {} for {what}: {}", reply.status, github::message(&reply.body));
        }
        return Ok(reply.body);
    }
    unreachable!("the loop returns or fails")
}

/// Every page of a REST list (100 per page), up to [`MAX_PAGES`].
async fn rest_list<T: DeserializeOwned>(api: &mut Api<'_>, path: &str, what: &str) -> Result<Vec<T>> {
    let mut items = Vec::new();
    for n in 1..=MAX_PAGES {
        let join = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{join}per_page=100&page={n}", api.rest);
        let body = page(api, &url, None, &format!("page {n} of {what}")).await?;
        let batch: Vec<T> = serde_json::from_slice(&body).with_context(|| format!("page {n} of {what}"))?;
        let last = batch.len() < 100;
        items.extend(batch);
        if last {
            return Ok(items);
        }
    }
    bail!("{what} has more than {MAX_PAGES} pages: raise github_sync::MAX_PAGES if that is real")
}

/// Every open pull request or issue of `repo` (GraphQL connection
/// `connection`), page after page by cursor, up to [`MAX_PAGES`].
async fn open_items<T: DeserializeOwned>(api: &mut Api<'_>, repo: &str, connection: &str) -> Result<Vec<T>> {
    let (owner, name) = repo.split_once('/').with_context(|| format!("{repo} is not owner/name"))?;
    let (query, url) = (self::query(connection), api.graphql.clone());
    let (mut items, mut after) = (Vec::new(), None::<String>);
    for n in 1..=MAX_PAGES {
        let what = format!("page {n} of {repo}'s open {connection}");
        let variables = serde_json::json!({"owner": owner, "name": name, "after": after});
        let body = serde_json::json!({"query": query, "variables": variables}).to_string();
        let answer: serde_json::Value =
            serde_json::from_slice(&page(api, &url, Some(body), &what).await?).with_context(|| what.clone())?;
        if let Some(errors) = answer["errors"].as_array().filter(|e| !e.is_empty()) {
            bail!(
                "GitHub refused {what}: {}",
                errors.iter().filter_map(|e| e["message"].as_str()).collect::<Vec<_>>().join("; ")
            );
        }
        spare_points(&answer["data"]["rateLimit"], &what)?;
        let found = &answer["data"]["repository"][connection];
        let batch: Connection<T> =
            serde_json::from_value(found.clone()).with_context(|| format!("{what}: not the connection asked for"))?;
        items.extend(batch.nodes);
        match (batch.page_info.has_next_page, batch.page_info.end_cursor) {
            (true, Some(cursor)) => after = Some(cursor),
            _ => return Ok(items),
        }
    }
    bail!("{repo}'s open {connection} have more than {MAX_PAGES} pages: raise github_sync::MAX_PAGES if that is real")
}

/// Stop before the installation's budget runs dry: the agents share it.
fn spare_points(limit: &serde_json::Value, what: &str) -> Result<()> {
    let Ok(limit) = serde_json::from_value::<RateLimit>(limit.clone()) else { return Ok(()) };
    if limit.remaining < RESERVE {
        bail!(
            "GitHub's GraphQL budget is down to {} points after {what} (resets at {}): the snapshot stops to leave them to the agents; the last snapshot stays",
            limit.remaining,
            limit.reset_at
        );
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn head(c: &Common) -> String {
    format!(
        "- **#{}** [{}]({})\n  - Author: @{}\n  - Created: {}\n  - Updated: {}\n",
        c.number,
        one_line(&c.title),
        c.url,
        c.author.as_ref().map_or("ghost", |u| u.login.as_str()),
        c.created_at,
        c.updated_at
    )
}

fn labels(c: &Common) -> String {
    let names: Vec<&str> = c.labels.nodes.iter().map(|l| l.name.as_str()).collect();
    format!("  - Labels: {}\n", if names.is_empty() { "none".into() } else { names.join(", ") })
}

fn pr_entry(pr: &PullRequest) -> String {
    let c = &pr.common;
    let mergeable = pr.mergeable.as_deref().unwrap_or("UNKNOWN");
    let state = pr.merge_state_status.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
    format!(
        "{}  - Review: {}\n  - Draft: {}\n  - Mergeable: {mergeable}{state}\n  - Comments: {} (review threads: {})\n{}",
        head(c),
        pr.review_decision.as_deref().unwrap_or("none"),
        pr.is_draft,
        c.comments.total,
        pr.review_threads.total,
        labels(c)
    )
}

fn issue_entry(issue: &Issue) -> String {
    let c = &issue.common;
    format!("{}  - Comments: {}\n{}", head(c), c.comments.total, labels(c))
}

/// A repository's section (`## owner/name`), or nothing when it has no entries.
fn section(out: &mut String, repo: &str, entries: Vec<String>) {
    if !entries.is_empty() {
        out.push_str(&format!("## {repo}\n\n{}\n", entries.concat()));
    }
}

/// Snapshot `org` into `root/github/`: every page first, then both files.
pub async fn sync(api: &str, org: &str, token: &str, root: &Path) -> Result<SyncReport> {
    let mut api = Api::new(api, token);
    let repos: Vec<Repo> =
        rest_list(&mut api, &format!("/orgs/{org}/repos?type=all&sort=full_name"), &format!("{org}'s repositories"))
            .await?;
    let stamp = format!("Last synced: {}\n\n", crate::clock::now_rfc3339());
    let mut prs = format!("# Open pull requests ({org})\n\n{stamp}");
    let mut issues = format!("# Open issues ({org})\n\n{stamp}");
    let mut report = SyncReport { org: org.into(), repos: 0, pull_requests: 0, issues: 0, requests: 0 };
    for repo in repos.iter().filter(|r| !r.archived).map(|r| r.full_name.as_str()) {
        let pulls: Vec<PullRequest> = open_items(&mut api, repo, "pullRequests").await?;
        let plain: Vec<Issue> = open_items(&mut api, repo, "issues").await?;
        (report.repos, report.pull_requests, report.issues) =
            (report.repos + 1, report.pull_requests + pulls.len(), report.issues + plain.len());
        section(&mut prs, repo, pulls.iter().map(pr_entry).collect());
        section(&mut issues, repo, plain.iter().map(issue_entry).collect());
    }
    report.requests = api.requests;
    let wait = Duration::from_secs(30);
    for (name, text) in [("github/prs.md", prs), ("github/issues.md", issues)] {
        let file = crate::memory::resolve(root, Path::new(name))?;
        tokio::task::block_in_place(|| crate::memory::write(&file, text.as_bytes(), wait))?;
    }
    Ok(report)
}

impl GithubSyncArgs {
    /// `host github-sync`: the token comes from the environment, never the command line.
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let token = std::env::var("GITHUB_TOKEN").map_err(|_| {
            crate::exit::UsageError("no GitHub token: set GITHUB_TOKEN (hosts load /run/clawd/github-app.env)".into())
        })?;
        let sync = sync(&self.api_url, &self.org, &token, &self.root);
        ctx.out.emit(&tokio::runtime::Handle::current().block_on(sync)?)
    }
}
