//! The gateway's cron store across gateway starts (`host workspace-seed
//! --cron-jobs … --cron-store …`, the gateway unit's ExecStartPre): jobs
//! made from chat and every job's run state survive; shipped jobs follow
//! the repository by id; a start with nothing new writes nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clawdinator::atomic::Owner;
use clawdinator::host::workspace::{self, install_cron_jobs};
use serde_json::{json, Value};

struct Host {
    _dir: tempfile::TempDir,
    templates: PathBuf,
    dest: PathBuf,
    jobs: PathBuf,
    store: PathBuf,
}

fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(p.join("templates/AGENTS.md"), "agents\n").unwrap();
    std::fs::create_dir_all(p.join("state")).unwrap();
    Host {
        _dir: dir,
        templates: p.join("templates"),
        dest: p.join("workspace"),
        jobs: p.join("cron-jobs.json"),
        store: p.join("state/cron-jobs.json"),
    }
}

fn heartbeat(expr: &str, text: &str) -> Value {
    json!({"id": "heartbeat", "name": "heartbeat", "enabled": true, "schedule": {"kind": "cron", "expr": expr},
           "sessionTarget": "main", "wakeMode": "now", "payload": {"kind": "systemEvent", "text": text}})
}

fn ship(h: &Host, jobs: &[Value]) {
    std::fs::write(&h.jobs, serde_json::to_vec_pretty(&json!({"version": 1, "jobs": jobs})).unwrap()).unwrap();
}

fn store(h: &Host) -> Value {
    serde_json::from_slice(&std::fs::read(&h.store).unwrap()).unwrap()
}

fn job<'a>(store: &'a Value, id: &str) -> Option<&'a Value> {
    store["jobs"].as_array().unwrap().iter().find(|j| j["id"] == id)
}

/// What the gateway does between two starts: records a run of the shipped
/// job (and adds its own defaults to it), and a job someone asked for in chat.
fn gateway_runs(h: &Host) -> Value {
    let mut s = store(h);
    let beat = s["jobs"].as_array_mut().unwrap().iter_mut().find(|j| j["id"] == "heartbeat").unwrap();
    beat["state"] = json!({"lastRunAtMs": 1795000000000u64, "nextRunAtMs": 1795003600000u64, "lastStatus": "ok"});
    beat["createdAtMs"] = json!(1794000000000u64);
    beat["delivery"] = json!({"mode": "none"});
    let chat = json!({"id": "7f3c-standup", "name": "standup reminder", "enabled": true,
        "schedule": {"kind": "cron", "expr": "0 9 * * 1-5", "tz": "Europe/Vienna"}, "sessionTarget": "isolated",
        "payload": {"kind": "agentTurn", "message": "Remind #maintainers of the standup."},
        "createdAtMs": 1795000100000u64,
        "state": {"lastRunAtMs": 1795001000000u64, "nextRunAtMs": 1795087400000u64, "lastStatus": "error",
                  "lastError": "discord 429", "consecutiveErrors": 1}});
    s["jobs"].as_array_mut().unwrap().push(chat);
    // The gateway writes its store compactly; the merge compares content, not bytes.
    std::fs::write(&h.store, serde_json::to_vec(&s).unwrap()).unwrap();
    s
}

/// A gateway start: the unit's ExecStartPre, through the host binary.
fn start(h: &Host) -> Value {
    let out = testkit::env::offline_cli(env!("CARGO_BIN_EXE_clawdinator"))
        .args(["host", "workspace-seed", "--json", "--templates"])
        .arg(&h.templates)
        .args([Path::new("--dest"), &h.dest, Path::new("--cron-jobs"), &h.jobs, Path::new("--cron-store"), &h.store])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["cronStore"].clone()
}

#[test]
fn a_job_made_from_chat_and_every_run_state_survive_a_gateway_start() {
    let h = host();
    ship(&h, &[heartbeat("0 * * * *", "Heartbeat: follow HEARTBEAT.md.")]);
    assert_eq!(start(&h)["state"], "created");
    std::fs::set_permissions(&h.store, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = gateway_runs(&h);

    // The attack of the old seeding: a start replaced the store with the shipped file.
    let report = start(&h);
    assert_eq!(report["state"], "unchanged", "{report}");
    assert_eq!(report["kept"], 1, "{report}");
    let after = store(&h);
    assert_eq!(after, before, "a gateway start changed a store the fleet had nothing new for");
    assert_eq!(job(&after, "7f3c-standup"), job(&before, "7f3c-standup"));
    assert_eq!(job(&after, "heartbeat").unwrap()["state"]["lastRunAtMs"], 1795000000000u64);
    assert_eq!(std::fs::metadata(&h.store).unwrap().permissions().mode() & 0o7777, 0o640);
}

#[test]
fn a_changed_shipped_job_is_updated_by_id_and_keeps_its_run_state() {
    let h = host();
    ship(&h, &[heartbeat("0 * * * *", "old text")]);
    start(&h);
    std::fs::set_permissions(&h.store, std::fs::Permissions::from_mode(0o640)).unwrap();
    gateway_runs(&h);
    // The fleet moves the heartbeat to every 30 minutes, new text, and stops shipping wakeMode.
    let mut next = heartbeat("*/30 * * * *", "new text");
    next.as_object_mut().unwrap().remove("wakeMode");
    ship(&h, &[next]);

    let report = start(&h);
    assert_eq!((report["state"].as_str(), report["updated"].clone()), (Some("merged"), json!(["heartbeat"])));
    let after = store(&h);
    let beat = job(&after, "heartbeat").unwrap();
    assert_eq!(beat["schedule"]["expr"], "*/30 * * * *");
    assert_eq!(beat["payload"]["text"], "new text");
    assert!(beat.get("wakeMode").is_none(), "a field no longer shipped stayed: {beat}");
    assert_eq!(beat["delivery"], json!({"mode": "none"}), "the gateway's own field was lost");
    assert_eq!(beat["createdAtMs"], 1794000000000u64);
    assert_eq!(
        beat["state"],
        json!({"lastRunAtMs": 1795000000000u64, "lastStatus": "ok"}),
        "the next run of the old schedule stays"
    );
    assert!(job(&after, "7f3c-standup").is_some(), "the chat job went with the update");
    assert_eq!(std::fs::metadata(&h.store).unwrap().permissions().mode() & 0o7777, 0o640, "the mode was not kept");
}

#[test]
fn a_job_no_longer_shipped_is_removed_and_one_made_from_chat_is_not() {
    let h = host();
    let digest = json!({"id": "digest", "name": "digest", "enabled": true, "schedule": {"kind": "cron", "expr": "0 8 * * *"},
                        "sessionTarget": "main", "payload": {"kind": "systemEvent", "text": "digest"}});
    ship(&h, &[heartbeat("0 * * * *", "t"), digest]);
    start(&h);
    gateway_runs(&h);
    ship(&h, &[heartbeat("0 * * * *", "t")]);
    let report = start(&h);
    assert_eq!(report["removed"], json!(["digest"]), "{report}");
    let after = store(&h);
    assert!(job(&after, "digest").is_none());
    assert!(job(&after, "7f3c-standup").is_some() && job(&after, "heartbeat").is_some());
}

#[test]
fn a_start_with_nothing_new_writes_nothing() {
    let h = host();
    ship(&h, &[heartbeat("0 * * * *", "t")]);
    start(&h);
    gateway_runs(&h);
    let record = workspace::shipped_record(&h.store);
    let stat = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let (store_before, record_before) = (stat(&h.store), stat(&record));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let report = install_cron_jobs(&h.jobs, &h.store, Owner::default()).unwrap();
    assert_eq!(report.state, "unchanged");
    assert_eq!(stat(&h.store), store_before, "the store was rewritten");
    assert_eq!(stat(&record), record_before, "the record was rewritten");
}

#[test]
fn a_bad_shipped_file_is_refused_by_name_and_the_store_is_untouched() {
    let h = host();
    ship(&h, &[heartbeat("0 * * * *", "t")]);
    start(&h);
    let kept = gateway_runs(&h);
    let mut with_state = heartbeat("0 * * * *", "t");
    with_state["state"] = json!({"nextRunAtMs": 1});
    let cases = [
        ("{ not json".to_string(), "is not JSON"),
        (json!({"version": 1}).to_string(), "no \"jobs\" list"),
        (json!({"jobs": [{"name": "x"}]}).to_string(), "needs a string \"id\""),
        (json!({"jobs": [heartbeat("1 * * * *", "a"), heartbeat("2 * * * *", "b")]}).to_string(), "shipped twice"),
        (json!({"jobs": [with_state]}).to_string(), "run state"),
    ];
    for (text, why) in cases {
        std::fs::write(&h.jobs, &text).unwrap();
        let err = format!("{:#}", install_cron_jobs(&h.jobs, &h.store, Owner::default()).unwrap_err());
        assert!(err.contains(why) && err.contains("cron-jobs.json"), "{text}: {err}");
        assert_eq!(store(&h), kept, "{text}: the store changed");
    }
}

#[test]
fn an_unreadable_store_is_set_aside_not_lost() {
    let h = host();
    ship(&h, &[heartbeat("0 * * * *", "t")]);
    std::fs::write(&h.store, "{ half a store").unwrap();
    let report = install_cron_jobs(&h.jobs, &h.store, Owner::default()).unwrap();
    let aside = PathBuf::from(report.set_aside.clone().expect("the store was set aside"));
    assert_eq!(std::fs::read_to_string(aside).unwrap(), "{ half a store");
    assert_eq!(report.state, "created");
    assert!(job(&store(&h), "heartbeat").is_some());
    assert_eq!(std::fs::metadata(&h.store).unwrap().permissions().mode() & 0o7777, 0o600);
}

#[test]
fn the_shipped_jobs_are_a_valid_cron_file() {
    let jobs = testkit::repo_root().join("clawdinator/cron-jobs.json");
    let h = host();
    let report = install_cron_jobs(&jobs, &h.store, Owner::default()).unwrap();
    assert_eq!(report.updated, ["heartbeat"]);
}
