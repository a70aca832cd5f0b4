//! `host github-sync` against a GitHub stand-in on loopback that answers
//! as GitHub does: the organisation's repositories from REST, each
//! repository's open pull requests and issues from GraphQL, page by page
//! (cursor), with rate limits. Every page is read; a page that fails
//! leaves the last snapshot as it was; the token goes only to GitHub.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clawdinator::host::github_sync::sync;
use serde_json::{json, Value};
use testkit::loopback::{read_http_request, HttpRequest};

/// status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);
type Handler = Arc<dyn Fn(&HttpRequest) -> Answer + Send + Sync>;

/// The stand-in: every request goes to `handler`; the log keeps `METHOD
/// target [page key]` and whether the token came with it.
fn github(handler: Handler) -> (String, Arc<Mutex<Vec<String>>>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(request) = read_http_request(&mut stream) else { continue };
            let token = if request.header("authorization") == "Bearer ghs_test" { "token" } else { "NO-TOKEN" };
            log.lock().unwrap().push(format!("{} {} {token}", request.line, key(&request)));
            let (status, headers, body) = handler(&request);
            let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

/// A GraphQL page's key: `repo connection cursor` (`-` for the first page).
fn key(request: &HttpRequest) -> String {
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else { return String::new() };
    let Some(query) = body["query"].as_str() else { return String::new() };
    let connection = if query.contains("pullRequests(") { "pullRequests" } else { "issues" };
    let v = &body["variables"];
    format!(
        "{}/{} {connection} {}",
        v["owner"].as_str().unwrap_or(""),
        v["name"].as_str().unwrap_or(""),
        v["after"].as_str().unwrap_or("-")
    )
}

fn pr(n: u64) -> Value {
    json!({"number": n, "title": format!("pr {n}\nsecond line"), "url": format!("https://github.com/o/a/pull/{n}"),
        "author": {"login": "alice"}, "createdAt": "2026-11-01T10:00:00Z", "updatedAt": "2026-11-20T10:00:00Z",
        "labels": {"nodes": [{"name": "bug"}]}, "comments": {"totalCount": n % 7}, "isDraft": n % 2 == 0,
        "reviewDecision": if n % 3 == 0 { json!("APPROVED") } else { Value::Null },
        "mergeable": "CONFLICTING", "mergeStateStatus": "DIRTY", "reviewThreads": {"totalCount": 2}})
}

fn issue(n: u64) -> Value {
    json!({"number": n, "title": format!("issue {n}"), "url": format!("https://github.com/o/b/issues/{n}"),
        "author": null, "createdAt": "2026-10-01T10:00:00Z", "updatedAt": "2026-11-21T10:00:00Z",
        "labels": {"nodes": []}, "comments": {"totalCount": 4}})
}

fn connection(connection: &str, nodes: &[Value], next: Option<&str>) -> String {
    json!({"data": {"rateLimit": {"remaining": 4900, "resetAt": "2026-11-22T11:00:00Z"},
        "repository": {connection: {"pageInfo": {"hasNextPage": next.is_some(), "endCursor": next}, "nodes": nodes}}}})
    .to_string()
}

/// The organisation `o`: o/a with 250 open pull requests (three pages) and
/// no issues, o/b with one issue, an archived o/old never to be read.
fn org() -> HashMap<String, String> {
    let prs: Vec<Value> = (1..=250).map(pr).collect();
    let repos = json!([{"full_name": "o/a"}, {"full_name": "o/b"}, {"full_name": "o/old", "archived": true}]);
    HashMap::from([
        ("GET /orgs/o/repos?type=all&sort=full_name&per_page=100&page=1 HTTP/1.1 ".into(), repos.to_string()),
        ("o/a pullRequests -".into(), connection("pullRequests", &prs[..100], Some("c100"))),
        ("o/a pullRequests c100".into(), connection("pullRequests", &prs[100..200], Some("c200"))),
        ("o/a pullRequests c200".into(), connection("pullRequests", &prs[200..], None)),
        ("o/a issues -".into(), connection("issues", &[], None)),
        ("o/b pullRequests -".into(), connection("pullRequests", &[], None)),
        ("o/b issues -".into(), connection("issues", &[issue(7)], None)),
    ])
}

/// Answers from `pages`, by request line (REST) or page key (GraphQL).
fn serve(pages: HashMap<String, String>) -> Handler {
    Arc::new(move |r: &HttpRequest| {
        let by = if r.target().0 == "POST" { key(r) } else { format!("{} ", r.line) };
        match pages.get(&by) {
            Some(body) => (200, vec![], body.clone()),
            None => (404, vec![], r#"{"message":"Not Found"}"#.into()),
        }
    })
}

fn memory() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("memory");
    std::fs::create_dir_all(root.join("github")).unwrap();
    (dir, root)
}

fn read(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join("github").join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_of_every_repository_with_the_fields_triage_needs() {
    let (_dir, root) = memory();
    let (url, seen) = github(serve(org()));
    let report = sync(&url, "o", "ghs_test", &root).await.unwrap();
    assert_eq!((report.repos, report.pull_requests, report.issues, report.requests), (2, 250, 1, 7), "{report:?}");

    let prs = read(&root, "prs.md");
    let stamp = prs.lines().find_map(|l| l.strip_prefix("Last synced: ")).expect("a Last synced: line");
    assert!(stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "not RFC 3339: {stamp}");
    assert_eq!(prs.matches("\n- **#").count(), 250);
    let third = "- **#3** [pr 3 second line](https://github.com/o/a/pull/3)\n  - Author: @alice\n  \
        - Created: 2026-11-01T10:00:00Z\n  - Updated: 2026-11-20T10:00:00Z\n  - Review: APPROVED\n  - Draft: false\n  \
        - Mergeable: CONFLICTING (DIRTY)\n  - Comments: 3 (review threads: 2)\n  - Labels: bug\n";
    assert!(prs.contains(third), "{prs}");
    assert!(
        prs.contains("- **#250** ") && prs.contains("  - Review: none\n  - Draft: true\n"),
        "the last page is missing"
    );
    assert!(!prs.contains("## o/b"), "a repository without pull requests got a section");

    let issues = read(&root, "issues.md");
    assert!(
        issues.contains(
            "## o/b\n\n- **#7** [issue 7](https://github.com/o/b/issues/7)\n  - Author: @ghost\n  \
        - Created: 2026-10-01T10:00:00Z\n  - Updated: 2026-11-21T10:00:00Z\n  - Comments: 4\n  - Labels: none\n"
        ),
        "{issues}"
    );

    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.ends_with(" token")), "a request without the token: {seen:?}");
    assert!(!seen.iter().any(|s| s.contains("o/old")), "the archived repository was read: {seen:?}");
    assert!(seen.iter().filter(|s| s.starts_with("POST /graphql ")).count() == 6, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_page_leaves_the_last_snapshot_and_is_named() {
    for (page, status, message) in
        [("o/a pullRequests c200", 502, "Server Error"), ("o/b issues -", 401, "Bad credentials")]
    {
        let (_dir, root) = memory();
        std::fs::write(root.join("github/prs.md"), "the last snapshot\n").unwrap();
        std::fs::write(root.join("github/issues.md"), "the last issues\n").unwrap();
        let mut pages = org();
        pages.remove(page);
        let failing = page.to_string();
        let inner = serve(pages);
        let handler: Handler = Arc::new(move |r: &HttpRequest| {
            if key(r) == failing {
                (status, vec![], json!({"message": message}).to_string())
            } else {
                inner(r)
            }
        });
        let (url, _) = github(handler);
        let err = format!("{:#}", sync(&url, "o", "ghs_test", &root).await.unwrap_err());
        let named =
            if page.starts_with("o/a") { "page 3 of o/a's open pullRequests" } else { "page 1 of o/b's open issues" };
        assert!(err.contains(named) && err.contains(&status.to_string()) && err.contains(message), "{err}");
        assert!(!err.contains("ghs_test"), "the token is in the error: {err}");
        assert_eq!(read(&root, "prs.md"), "the last snapshot\n", "{page}: half a snapshot was written");
        assert_eq!(read(&root, "issues.md"), "the last issues\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graphql_errors_and_a_missing_repository_are_failures_not_empty_lists() {
    let (_dir, root) = memory();
    std::fs::write(root.join("github/prs.md"), "the last snapshot\n").unwrap();
    let mut pages = org();
    pages.insert(
        "o/b issues -".into(),
        json!({"data": {"repository": null}, "errors": [{"type": "NOT_FOUND", "message": "Could not resolve to a Repository"}]}).to_string(),
    );
    let (url, _) = github(serve(pages));
    let err = format!("{:#}", sync(&url, "o", "ghs_test", &root).await.unwrap_err());
    assert!(err.contains("page 1 of o/b's open issues") && err.contains("Could not resolve"), "{err}");
    assert_eq!(read(&root, "prs.md"), "the last snapshot\n");
}

/// A short secondary rate limit (`Retry-After`) is waited out and the page
/// read again; a long one (the hourly budget spent until `x-ratelimit-reset`)
/// ends the run at once, naming the page, and the last snapshot stays.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_waited_out_when_short_and_end_the_run_when_long() {
    let (_dir, root) = memory();
    let limited = Arc::new(Mutex::new(0));
    let (count, inner) = (limited.clone(), serve(org()));
    let handler: Handler = Arc::new(move |r: &HttpRequest| {
        let mut n = count.lock().unwrap();
        if key(r) == "o/a pullRequests c100" && *n == 0 {
            *n += 1;
            return (
                403,
                vec![("retry-after", "0".into())],
                r#"{"message":"You have exceeded a secondary rate limit."}"#.into(),
            );
        }
        inner(r)
    });
    let (url, seen) = github(handler);
    let report = sync(&url, "o", "ghs_test", &root).await.unwrap();
    assert_eq!((report.pull_requests, report.requests), (250, 8), "{report:?}");
    assert_eq!(seen.lock().unwrap().iter().filter(|s| s.contains("o/a pullRequests c100")).count(), 2);

    std::fs::write(root.join("github/prs.md"), "the last snapshot\n").unwrap();
    let reset = clawdinator::clock::unix_seconds() + 1800;
    let inner = serve(org());
    let handler: Handler = Arc::new(move |r: &HttpRequest| {
        if key(r) == "o/b pullRequests -" {
            let headers = vec![("x-ratelimit-remaining", "0".to_string()), ("x-ratelimit-reset", reset.to_string())];
            return (429, headers, r#"{"message":"API rate limit exceeded for installation."}"#.into());
        }
        inner(r)
    });
    let (url, seen) = github(handler);
    let started = std::time::Instant::now();
    let err = format!("{:#}", sync(&url, "o", "ghs_test", &root).await.unwrap_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the run slept on a long limit");
    assert!(err.contains("rate limit") && err.contains("page 1 of o/b's open pullRequests"), "{err}");
    assert_eq!(
        seen.lock().unwrap().iter().filter(|s| s.contains("o/b pullRequests")).count(),
        1,
        "retried a long limit"
    );
    assert_eq!(read(&root, "prs.md"), "the last snapshot\n");
}

/// The agents share the installation's GraphQL budget: the snapshot stops
/// before it spends the last of it.
#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_stops_before_the_agents_budget() {
    let (_dir, root) = memory();
    std::fs::write(root.join("github/prs.md"), "the last snapshot\n").unwrap();
    let mut pages = org();
    let low = pages["o/a pullRequests -"].replace("\"remaining\":4900", "\"remaining\":120");
    pages.insert("o/a pullRequests -".into(), low);
    let (url, seen) = github(serve(pages));
    let err = format!("{:#}", sync(&url, "o", "ghs_test", &root).await.unwrap_err());
    assert!(err.contains("120 points") && err.contains("page 1 of o/a's open pullRequests"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 2, "it read on after the budget ran low");
    assert_eq!(read(&root, "prs.md"), "the last snapshot\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_longer_than_the_bound_is_an_error_not_a_cut() {
    let (_dir, root) = memory();
    let handler: Handler = Arc::new(|r: &HttpRequest| {
        if r.target().0 == "GET" {
            return (200, vec![], json!([{"full_name": "o/a"}]).to_string());
        }
        // Every page says there is another.
        let after = key(r).rsplit(' ').next().unwrap_or("-").to_string();
        let next = format!("{after}+");
        (200, vec![], connection("pullRequests", &[pr(1)], Some(&next)))
    });
    let (url, seen) = github(handler);
    let err = format!("{:#}", sync(&url, "o", "ghs_test", &root).await.unwrap_err());
    let bound = clawdinator::host::github_sync::MAX_PAGES;
    assert!(err.contains(&format!("more than {bound} pages")) && err.contains("o/a"), "{err}");
    assert_eq!(seen.lock().unwrap().len() as u32, 1 + bound);
    assert!(!root.join("github/prs.md").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_never_travels_in_the_clear_off_this_machine() {
    let (_dir, root) = memory();
    let err = format!("{:#}", sync("http://192.0.2.1:9", "o", "ghs_test", &root).await.unwrap_err());
    assert!(err.contains("plain HTTP") && !err.contains("ghs_test"), "{err}");
}
