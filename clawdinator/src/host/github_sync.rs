//! `host github-sync`: the organisation's open pull requests and issues, as
//! plain facts, into shared memory (`github/prs.md`, `github/issues.md`)
//! for the agents to reason about. Read with the installation token the
//! token unit refreshes (`GITHUB_TOKEN`), written through the memory lock,
//! each file replaced whole. Nothing is judged or filtered here.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::github;

#[derive(Debug, Deserialize)]
struct Repo {
    full_name: String,
    #[serde(default)]
    archived: bool,
}

#[derive(Debug, Deserialize)]
struct User {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

/// A pull request or an issue (GitHub lists pull requests among issues).
#[derive(Debug, Deserialize)]
struct Item {
    number: u64,
    title: String,
    html_url: String,
    user: Option<User>,
    updated_at: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    labels: Vec<Label>,
    pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub org: String,
    pub repos: usize,
    pub pull_requests: usize,
    pub issues: usize,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} open pull request(s), {} open issue(s) in {} repositories",
            self.org, self.pull_requests, self.issues, self.repos
        )
    }
}

/// Every page of a list endpoint (100 per page).
async fn all<T: serde::de::DeserializeOwned>(api: &str, path: &str, token: &str) -> Result<Vec<T>> {
    let mut items = Vec::new();
    for page in 1.. {
        let join = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{join}per_page=100&page={page}", api.trim_end_matches('/'));
        let (status, body) = github::call(hyper::Method::GET, &url, token).await?;
        if !status.is_success() {
            bail!("GitHub answered {status} for {path}: {}", github::message(&body));
        }
        let batch: Vec<T> = serde_json::from_slice(&body).with_context(|| format!("GitHub's answer for {path}"))?;
        let last = batch.len() < 100;
        items.extend(batch);
        if last {
            break;
        }
    }
    Ok(items)
}

fn entry(item: &Item, pr: bool) -> String {
    let labels: Vec<&str> = item.labels.iter().map(|l| l.name.as_str()).collect();
    let mut text = format!(
        "- **#{}** [{}]({})\n  - Author: @{}\n  - Updated: {}\n",
        item.number,
        item.title.replace(['\n', '\r'], " "),
        item.html_url,
        item.user.as_ref().map_or("ghost", |u| u.login.as_str()),
        item.updated_at
    );
    if pr {
        text.push_str(&format!("  - Draft: {}\n", item.draft));
    }
    let labels = if labels.is_empty() { "none".to_string() } else { labels.join(", ") };
    text.push_str(&format!("  - Labels: {labels}\n"));
    text
}

/// Snapshot `org` into `root/github/`.
pub async fn sync(api: &str, org: &str, token: &str, root: &Path) -> Result<SyncReport> {
    let repos: Vec<Repo> = all(api, &format!("/orgs/{org}/repos?type=all&sort=full_name"), token).await?;
    let stamp = format!("Last synced: {}\n\n", crate::clock::now_rfc3339());
    let mut prs = format!("# Open pull requests ({org})\n\n{stamp}");
    let mut issues = format!("# Open issues ({org})\n\n{stamp}");
    let mut report = SyncReport { org: org.into(), repos: 0, pull_requests: 0, issues: 0 };
    for repo in repos.iter().filter(|r| !r.archived) {
        report.repos += 1;
        let items: Vec<Item> = all(api, &format!("/repos/{}/issues?state=open", repo.full_name), token).await?;
        let (pulls, plain): (Vec<&Item>, Vec<&Item>) = items.iter().partition(|i| i.pull_request.is_some());
        for (list, out, pr) in [(&pulls, &mut prs, true), (&plain, &mut issues, false)] {
            if !list.is_empty() {
                out.push_str(&format!("## {}\n\n", repo.full_name));
                list.iter().for_each(|i| out.push_str(&entry(i, pr)));
                out.push('\n');
            }
        }
        report.pull_requests += pulls.len();
        report.issues += plain.len();
    }
    let wait = Duration::from_secs(30);
    for (name, text) in [("github/prs.md", prs), ("github/issues.md", issues)] {
        let file = crate::memory::resolve(root, Path::new(name))?;
        tokio::task::block_in_place(|| crate::memory::write(&file, text.as_bytes(), wait))?;
    }
    Ok(report)
}
