//! The fleet lane: how every per-host roll goes (`fleet switch`, `fleet
//! refresh-secrets`). Every host resolves to its one running instance
//! before any is touched; the first goes alone as the canary, then waves
//! of `parallel`; the first failure stops the lane and the hosts after it
//! are marked not started. The lane returns one report, also when it
//! stops ([`Stopped`] carries it): only the command line prints it.

use std::future::Future;

use serde::Serialize;

use super::host_run::{running_instances, the_one};
use crate::aws::Aws;

/// The words a roll's report uses for what it did to a host.
pub struct Verb {
    /// `switch`: in messages ("nothing was switched").
    pub name: &'static str,
    pub done: &'static str,
    pub already: &'static str,
    pub would: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostOutcome {
    pub name: String,
    pub instance_id: Option<String>,
    /// What the host was asked to switch to, where that differs per host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// `switched`, `failed`, `not-started`, `would-switch`, `would-fail`, …
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneReport {
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub waves: Vec<Vec<String>>,
    pub hosts: Vec<HostOutcome>,
    /// The outcome of a host the lane did its work on ([`Verb::done`]).
    #[serde(skip)]
    pub done: &'static str,
}

impl crate::audit::Audited for LaneReport {
    /// The instances the lane did its work on.
    fn resources(&self) -> Vec<String> {
        self.hosts.iter().filter(|h| h.outcome == self.done).filter_map(|h| h.instance_id.clone()).collect()
    }
}

impl std::fmt::Display for LaneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.revision {
            Some(rev) => writeln!(f, "{rev}: {}", self.command)?,
            None => writeln!(f, "{}", self.command)?,
        }
        for (n, wave) in self.waves.iter().enumerate() {
            writeln!(f, "  wave {}{}: {}", n + 1, if n == 0 { " (canary)" } else { "" }, wave.join(", "))?;
        }
        for h in &self.hosts {
            let id = h.instance_id.as_deref().unwrap_or("-");
            let detail = if h.detail.is_empty() { String::new() } else { format!(": {}", h.detail) };
            writeln!(f, "  {:<16} {:<20} {}{detail}", h.name, id, h.outcome)?;
            if let Some(system) = &h.system {
                writeln!(f, "  {:<16} {system}", "")?;
            }
        }
        Ok(())
    }
}

/// A lane that stopped at a failed host; its report says what each host got.
#[derive(Debug)]
pub struct Stopped {
    pub report: LaneReport,
    pub why: String,
    pub verb: &'static str,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fleet {} stopped: {}", self.verb, self.why)
    }
}

impl std::error::Error for Stopped {}

/// The canary alone, then waves of `parallel`.
pub fn waves(names: &[String], parallel: usize) -> Vec<Vec<String>> {
    let Some((canary, rest)) = names.split_first() else { return vec![] };
    std::iter::once(vec![canary.clone()]).chain(rest.chunks(parallel.max(1)).map(|c| c.to_vec())).collect()
}

/// A host the lane will work on.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub instance_id: String,
    pub system: Option<String>,
    /// Done by an earlier run: not touched again.
    pub already: bool,
}

/// Every host's one running instance, or the reason it has none: one
/// listing of the fleet, however many hosts.
pub async fn resolve(aws: &Aws, names: &[String]) -> Vec<(String, anyhow::Result<(String, Option<String>)>)> {
    match running_instances(aws, None).await {
        Ok(found) => names.iter().map(|name| (name.clone(), the_one(name, found.get(name)))).collect(),
        Err(e) => {
            let why = format!("{e:#}");
            names.iter().map(|name| (name.clone(), Err(anyhow::anyhow!("{name}: {why}")))).collect()
        }
    }
}

fn outcome(t: &Target, word: &'static str, detail: String) -> HostOutcome {
    HostOutcome {
        name: t.name.clone(),
        instance_id: Some(t.instance_id.clone()),
        system: t.system.clone(),
        outcome: word,
        detail,
    }
}

/// A dry run: what each host would get, and which cannot be resolved.
pub fn plan(mut report: LaneReport, verb: &Verb, targets: &[Target], unresolved: Vec<(String, String)>) -> LaneReport {
    for t in targets {
        report.hosts.push(outcome(t, if t.already { verb.already } else { verb.would }, String::new()));
    }
    for (name, why) in unresolved {
        report.hosts.push(HostOutcome { name, instance_id: None, system: None, outcome: "would-fail", detail: why });
    }
    report
}

/// Roll `work` over the targets in waves; see the module comment.
pub async fn roll<F, Fut>(
    mut report: LaneReport,
    verb: &Verb,
    targets: &[Target],
    work: F,
) -> anyhow::Result<LaneReport>
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut failure: Option<String> = None;
    for wave in report.waves.clone() {
        let wave: Vec<&Target> = targets.iter().filter(|t| wave.contains(&t.name)).collect();
        if failure.is_some() {
            report.hosts.extend(wave.iter().map(|t| outcome(t, "not-started", String::new())));
            continue;
        }
        let runs = wave.iter().map(|t| async { (*t, if t.already { None } else { Some(work((*t).clone()).await) }) });
        for (t, result) in futures::future::join_all(runs).await {
            let (word, detail) = match result {
                None => (verb.already, String::new()),
                Some(Ok(())) => (verb.done, String::new()),
                Some(Err(e)) => {
                    failure.get_or_insert(format!("{e:#}"));
                    ("failed", format!("{e:#}"))
                }
            };
            report.hosts.push(outcome(t, word, detail));
        }
    }
    match failure {
        Some(why) => Err(Stopped { report, why, verb: verb.name }.into()),
        None => Ok(report),
    }
}

/// A lane's report is printed here alone: also when it stopped, before its error.
pub fn emit(ctx: &crate::ctx::Ctx, result: anyhow::Result<LaneReport>) -> anyhow::Result<()> {
    match result {
        Ok(report) => ctx.out.emit(&report),
        Err(e) => {
            if let Some(stopped) = e.downcast_ref::<Stopped>() {
                ctx.out.emit(&stopped.report)?;
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_goes_alone_then_waves_of_parallel() {
        let names: Vec<String> = (1..=6).map(|n| format!("h{n}")).collect();
        assert_eq!(waves(&names, 2), vec![vec!["h1"], vec!["h2", "h3"], vec!["h4", "h5"], vec!["h6"]]);
        assert_eq!(waves(&names[..1], 4), vec![vec!["h1"]]);
        assert_eq!(waves(&names[..3], 1).len(), 3);
    }
}
