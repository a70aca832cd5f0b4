//! The proposals token (issues on the fleet's repository) triggers
//! nothing: no workflow of the fleet runs on an event that an issue, a
//! comment or a label makes. Were one to, a bot's proposal could run CI
//! with the fleet's secrets (or deploy).

/// Events an issues-write token can cause on the repository.
const ISSUE_EVENTS: &[&str] =
    &["issues", "issue_comment", "label", "milestone", "discussion", "discussion_comment", "pull_request_target"];

/// Pull request activity an issues-write token can cause (labels, assignees, milestones, edits of the title).
const ISSUE_ACTIVITY: &[&str] =
    &["labeled", "unlabeled", "assigned", "unassigned", "milestoned", "demilestoned", "edited"];

/// The triggers of a workflow (`on:` as a block, a list or one name), each
/// with the text of its block, read without a YAML library: the fleet's
/// workflows use only these forms, and one this does not read fails below.
fn triggers(text: &str) -> Vec<(String, String)> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("on:") && !l.starts_with("\"on\":"));
    let first = lines.next().expect("a workflow without `on:`");
    let inline = first.split_once(':').map(|(_, v)| v.trim()).unwrap_or_default();
    if !inline.is_empty() {
        return inline.trim_matches(['[', ']']).split(',').map(|t| (t.trim().to_string(), String::new())).collect();
    }
    let mut found: Vec<(String, String)> = Vec::new();
    for line in lines.take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#')) {
        match line.strip_prefix("  ").filter(|l| !l.starts_with(' ') && !l.starts_with('#')) {
            Some(key) => found.push((key.split(':').next().unwrap_or_default().trim().to_string(), String::new())),
            None => {
                if let Some(last) = found.last_mut() {
                    last.1.push_str(line);
                    last.1.push('\n');
                }
            }
        }
    }
    found
}

/// What in `text` an issue writer could start.
fn started_by_issues(text: &str) -> Vec<String> {
    triggers(text)
        .into_iter()
        .filter(|(name, block)| {
            ISSUE_EVENTS.contains(&name.as_str())
                || (name.starts_with("pull_request") && ISSUE_ACTIVITY.iter().any(|a| block.contains(a)))
        })
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn the_fleet_runs_no_workflow_on_issue_events() {
    let dir = testkit::repo_root().join(".github/workflows");
    let mut read = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!triggers(&text).is_empty(), "{}: no trigger read", path.display());
        assert_eq!(started_by_issues(&text), Vec::<String>::new(), "{}: a proposal could start it", path.display());
        read += 1;
    }
    assert!(read >= 5, "only {read} workflows in {}", dir.display());
}

#[test]
fn the_scan_sees_each_form_of_an_issue_trigger() {
    let cases = [
        ("on:\n  issue_comment:\n    types: [created]\npermissions: {}\n", vec!["issue_comment"]),
        ("on: [push, issues]\n", vec!["issues"]),
        ("on:\n  pull_request:\n    types: [opened, labeled]\n  push:\n", vec!["pull_request"]),
        ("on:\n  pull_request:\n  push:\n    branches: [main]\n", vec![]),
    ];
    for (text, want) in cases {
        assert_eq!(started_by_issues(text), want, "{text}");
    }
}
