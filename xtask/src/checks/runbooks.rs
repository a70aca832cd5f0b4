//! The agents' runbooks (`clawdinator/workspace`, `memory/`) are correct
//! about the commands they show and safe to follow to the end:
//!
//! - every `clawdinator …` or `cargo xtask …` command parses against that
//!   binary's own definition (the host binary's for `clawdinator`, which is
//!   all a host has), so a renamed flag fails here before an agent trips on it;
//! - every `git`, `gh`, `pnpm` and `systemctl` command parses against the
//!   subset of those tools the playbooks may use ([`tool_grammar`]): a
//!   merge that is not pinned to the tested head, a push that is not a lease,
//!   an admin merge or a `gh` write outside openclaw/openclaw (but a
//!   proposal, an issue opened on openclaw/clawdinators) does not parse,
//!   and landpr may not close, so no playbook can tell an agent to do it;
//! - a workspace command line runs only programs the host has;
//! - no command names a secret's file, and no agent-facing text names root's
//!   directory (the agents cannot read it);
//! - AGENTS.md states the rules of the room, SOUL.md gives the voice with
//!   its examples, and IDENTITY.md and memory/architecture.md name only host
//!   paths the module gives the agents.
//!
//! Unit tests only.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgGroup, Command, CommandFactory, Parser};
use clawdinator::cli::Clawdinator;

use crate::flags::Xtask;

fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            markdown_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "md") {
            found.push(path);
        }
    }
}

/// Words of one simple command: double or single quotes group; `<`, `>`,
/// `|`, `;` and `#` end the command (what follows is the shell's, not ours),
/// and a file descriptor before a redirection (`2>`) is not a word.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => (quote, started) = (Some(c), true),
            (None, '<' | '>') if !started && word.chars().all(|c| c.is_ascii_digit()) => {
                word.clear();
                break;
            }
            (None, '<' | '|' | ';' | '#' | '>') => break,
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// The simple commands of a shell line: each `$(…)` is a command of its own
/// (a word `X` stands in for it), and `&&`, `||`, `|` and `;` outside quotes
/// separate commands.
fn simple_commands(line: &str) -> Vec<String> {
    let (mut found, mut rest, mut part, mut quote) = (Vec::new(), String::new(), String::new(), None);
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (q, '$') if q != Some('\'') && chars.get(i + 1) == Some(&'(') => {
                let end = closing(&chars, i + 1);
                found.extend(simple_commands(&chars[i + 2..end].iter().collect::<String>()));
                part.push('X');
                i = end + 1;
                continue;
            }
            (None, '&' | '|' | ';') => {
                rest.push_str(&std::mem::take(&mut part));
                rest.push('\n');
                i += 1;
                continue;
            }
            _ => {}
        }
        part.push(c);
        i += 1;
    }
    rest.push_str(&part);
    let parts = rest.lines().map(str::trim).filter(|p| !p.is_empty()).map(String::from);
    parts.chain(found).collect()
}

/// The index of the `)` that closes the `(` at `open` (or the end).
fn closing(chars: &[char], open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in chars.iter().enumerate().skip(open) {
        match c {
            '(' => depth += 1,
            ')' if depth == 1 => return i,
            ')' => depth -= 1,
            _ => {}
        }
    }
    chars.len()
}

/// A command a runbook shows: a command line (an indented code line), or a
/// mention in running text (a backtick span, which may name a command
/// without all its arguments).
#[derive(Debug)]
struct Shown {
    command: String,
    words: Vec<String>,
    mention: bool,
}

/// The lines of a runbook outside fenced blocks: a fence holds a template
/// (a SITREP, a memo, a comment), never a command, so it is not scanned; a
/// fence marked as shell is refused where commands are checked.
fn unfenced(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The commands a runbook shows. Code lines ending in `\` continue on the
/// next; a backtick span broken across lines is joined first.
fn commands(text: &str) -> Vec<Shown> {
    let lines = unfenced(text);
    let mut found = Vec::new();
    let mut push = |candidate: &str, mention: bool| {
        for command in simple_commands(candidate) {
            let mut words: Vec<String> = words(&command).into_iter().filter(|w| w != "…").collect();
            let assignments = words.iter().take_while(|w| is_assignment(w)).count();
            words.drain(..assignments);
            if !words.is_empty() && (!mention || program(&words) != Program::Other) {
                found.push(Shown { command: command.clone(), words, mention });
            }
        }
    };
    let code: String = lines.iter().filter(|l| l.starts_with("    ")).map(|l| format!("{}\n", l.trim())).collect();
    for line in code.replace("\\\n", " ").lines() {
        push(line, false);
    }
    let prose: String = lines.iter().filter(|l| !l.starts_with("    ")).copied().collect::<Vec<_>>().join(" ");
    for span in prose.split('`').skip(1).step_by(2) {
        push(span, true);
    }
    found
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) && !name.starts_with('-')
    })
}

/// Who defines a command's grammar.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Program {
    /// `clawdinator …`: the host binary.
    Host,
    /// `cargo xtask …`.
    Xtask,
    /// git, gh, pnpm, systemctl: [`tool_grammar`].
    Tool,
    /// Plain shell helpers a playbook may use as they are (no grammar).
    Helper,
    Other,
}

/// Helpers a workspace command line may run: shell builtins, coreutils
/// (every NixOS system has them) and jq from the agents' toolchain.
const HELPERS: &[&str] = &["cd", "set", "printf", "test", "seq", "date", "wc", "jq"];

fn program(words: &[String]) -> Program {
    match words[0].as_str() {
        "clawdinator" => Program::Host,
        "cargo" if words.get(1).is_some_and(|w| w == "xtask") => Program::Xtask,
        "git" | "gh" | "pnpm" | "systemctl" => Program::Tool,
        w if HELPERS.contains(&w) => Program::Helper,
        _ => Program::Other,
    }
}

fn flag(name: &'static str, short: Option<char>) -> Arg {
    let arg = Arg::new(name).long(name).action(ArgAction::SetTrue);
    match short {
        Some(s) => arg.short(s),
        None => arg,
    }
}

fn opt(name: &'static str, short: Option<char>) -> Arg {
    let arg = Arg::new(name).long(name).num_args(1).allow_hyphen_values(true);
    match short {
        Some(s) => arg.short(s),
        None => arg,
    }
}

fn pos(name: &'static str, required: bool) -> Arg {
    Arg::new(name).required(required)
}

fn sub(name: &'static str, args: impl IntoIterator<Item = Arg>) -> Command {
    Command::new(name).args(args).disable_help_flag(true)
}

fn tool(name: &'static str, subs: impl IntoIterator<Item = Command>) -> Command {
    Command::new(name)
        .subcommands(subs)
        .subcommand_required(true)
        .disable_help_subcommand(true)
        .disable_help_flag(true)
        .no_binary_name(true)
}

/// `--repo` on a `gh pr` command: always named (the working directory must
/// not decide which repository a bot writes), and for a write only
/// openclaw/openclaw, the one repository the playbooks act on.
fn repo(write: bool) -> Arg {
    let arg = opt("repo", Some('R')).required(true);
    if write {
        arg.value_parser(["openclaw/openclaw"])
    } else {
        arg
    }
}

/// The git commands the playbooks may show. A push is only a lease on an
/// explicit expected commit (`--force-with-lease=<branch>:<sha>`) to an
/// explicit repository and refspec; `--force`, `-f`, `--mirror`, `--delete`
/// and `--all` do not exist here, and [`policy`] refuses `+` and main.
fn git() -> Command {
    let lease = opt("force-with-lease", None).require_equals(true).value_parser(|v: &str| match v.split_once(':') {
        Some((r, sha)) if !r.is_empty() && !sha.is_empty() => Ok(v.to_string()),
        _ => Err("a lease names the branch and the commit it expects (--force-with-lease=<branch>:<sha>)"),
    });
    tool(
        "git",
        [
            sub("status", [flag("porcelain", None)]),
            sub("fetch", [flag("unshallow", None), pos("repository", true), Arg::new("refspec").num_args(0..)]),
            sub("switch", [opt("force-create", Some('C')), pos("branch", false)]),
            sub("rebase", [pos("upstream", false), flag("abort", None), flag("continue", None)]),
            sub("rev-parse", [flag("is-shallow-repository", None), pos("rev", false)]),
            sub("merge-base", [pos("a", true), pos("b", true)]),
            sub("diff", [flag("name-status", None), flag("stat", None), flag("check", None), pos("range", false)]),
            sub("add", [Arg::new("path").num_args(1..).required(true)]),
            sub("commit", [opt("message", Some('m')).required(true)]),
            sub("push", [lease, pos("repository", true), pos("refspec", true)]),
            sub("pull", [flag("ff-only", None).required(true)]),
            sub("branch", [Arg::new("delete").short('D').num_args(1..).required(true)]),
            sub("log", [flag("oneline", None), opt("max-count", Some('n')), pos("range", false)]),
        ],
    )
}

/// The gh commands the playbooks may show. No `--admin` or `--auto` merge,
/// no `api` write (`-X`, `-f`, `-F`): none of them parse. A merge names its
/// method and the head commit it tested.
fn gh() -> Command {
    let json = || [opt("json", None), opt("jq", Some('q'))];
    let number = || pos("number", true);
    let merge = sub(
        "merge",
        [number(), repo(true), flag("rebase", Some('r')), flag("squash", Some('s'))].into_iter().chain([opt(
            "match-head-commit",
            None,
        )
        .required(true)]),
    )
    .group(ArgGroup::new("method").args(["rebase", "squash"]).required(true).multiple(false));
    let pr = tool(
        "pr",
        [
            sub("view", [number(), repo(false)].into_iter().chain(json())),
            sub("checkout", [number(), repo(false), opt("branch", Some('b')), flag("force", Some('f'))]),
            merge,
            sub("comment", [number(), repo(true), opt("body-file", Some('F')).required(true)]),
            // Closing is for the canned responses, on a maintainer's yes; [`policy`] keeps it out of landpr.
            sub("close", [number(), repo(true)]),
            sub("diff", [number(), repo(false), flag("name-only", None)]),
            sub("checks", [number(), repo(false), flag("watch", None), flag("required", None)]),
            sub(
                "list",
                [repo(false), opt("state", Some('s')), opt("limit", Some('L')), opt("search", Some('S'))]
                    .into_iter()
                    .chain(json()),
            ),
        ],
    );
    let api = sub("api", [pos("endpoint", true), flag("paginate", None), opt("jq", Some('q'))]);
    tool("gh", [pr, issue(), api])
}

/// `gh issue`: only a proposal to the fleet, an issue opened on
/// openclaw/clawdinators (the one write the proposals token can make), with
/// its title and a body from a file, and the list of open ones there;
/// nothing else on issues.
fn issue() -> Command {
    let fleet = opt("repo", Some('R')).required(true).value_parser(["openclaw/clawdinators"]);
    let create = sub(
        "create",
        [fleet.clone(), opt("title", Some('t')).required(true), opt("body-file", Some('F')).required(true)],
    );
    let list = sub("list", [fleet, opt("state", Some('s')), opt("search", Some('S')), opt("limit", Some('L'))]);
    tool("issue", [create, list])
}

/// pnpm: the frozen install and the three scripts of the landing gate.
fn pnpm() -> Command {
    tool(
        "pnpm",
        [
            sub("install", [flag("frozen-lockfile", None).required(true)]),
            sub("lint", []),
            sub("build", []),
            sub("test", []),
        ],
    )
}

/// systemctl: reading a unit's state (an agent cannot change one).
fn systemctl() -> Command {
    let units = || Arg::new("unit").num_args(1..).required(true);
    tool(
        "systemctl",
        [
            sub("status", [units(), flag("no-pager", None)]),
            sub("is-active", [units()]),
            sub("show", [units(), opt("property", Some('p'))]),
        ],
    )
}

fn tool_grammar(name: &str) -> Command {
    match name {
        "git" => git(),
        "gh" => gh(),
        "pnpm" => pnpm(),
        _ => systemctl(),
    }
}

/// Whether the command's program takes it: a mention may leave out what is
/// required, never name a command or flag that does not exist.
fn parses(shown: &Shown) -> Result<(), clap::error::ErrorKind> {
    use clap::error::ErrorKind::*;
    let argv = &shown.words;
    let parsed = match program(argv) {
        Program::Xtask => {
            Xtask::try_parse_from(&argv[1..]).map(|_| ()).or_else(|e| from_env(Xtask::command(), argv, e))
        }
        Program::Host => {
            Clawdinator::try_parse_from(argv).map(|_| ()).or_else(|e| from_env(Clawdinator::command(), argv, e))
        }
        Program::Tool => tool_grammar(&argv[0]).try_get_matches_from(&argv[1..]).map(|_| ()),
        Program::Helper => Ok(()),
        Program::Other => return Err(InvalidSubcommand),
    };
    match parsed {
        Ok(_) => Ok(()),
        Err(e)
            if shown.mention
                && matches!(
                    e.kind(),
                    MissingRequiredArgument | MissingSubcommand | DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.kind()),
    }
}

/// A whole line may leave out only what the program reads from the
/// environment when the flag is absent (`--bucket`, from `S3_BUCKET`): the
/// error stands unless every missing argument is such a flag.
fn from_env(mut command: Command, argv: &[String], err: clap::Error) -> Result<(), clap::Error> {
    use clap::error::{ContextKind, ContextValue};
    if err.kind() != clap::error::ErrorKind::MissingRequiredArgument {
        return Err(err);
    }
    for word in argv {
        if let Some(sub) = command.find_subcommand(word) {
            command = sub.clone();
        }
    }
    let Some(ContextValue::Strings(missing)) = err.get(ContextKind::InvalidArg) else { return Err(err) };
    let by_env = |m: &String| {
        let long = m.split_whitespace().next().unwrap_or("").trim_start_matches("--");
        command.get_arguments().any(|a| a.get_long() == Some(long) && a.get_env().is_some())
    };
    if missing.iter().all(by_env) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Secrets' directories on a host (lib.nix's `agenix` and `runDir`): the
/// age-decrypted secrets, and the GitHub token files. A runbook may name
/// them in prose (to say never print them), never in a command.
const SECRET_DIRS: &[&str] = &["/run/agenix", "/run/clawd"];

/// What a grammar cannot say: a push never forces (`+`) and never lands on
/// main, landpr never closes (its pull request must end MERGED), and no
/// command reads a secret's file.
fn policy(file: &Path, shown: &Shown) -> Result<(), String> {
    // The whole command, redirections included (`< /run/agenix/…` is a read too).
    if let Some(dir) = SECRET_DIRS.iter().find(|d| shown.command.contains(*d)) {
        return Err(format!("names a secret's file under {dir}: a runbook never shows a command that reads a secret"));
    }
    let w = &shown.words;
    let landpr = file.components().any(|c| c.as_os_str() == "landpr");
    if landpr && w[0] == "gh" && w.get(2).is_some_and(|s| s == "close") {
        return Err("closes a pull request: landpr ends MERGED, never closed".into());
    }
    if w[0] == "git" && w.get(1).is_some_and(|s| s == "push") {
        let refspec = w.iter().skip(2).filter(|a| !a.starts_with('-')).nth(1).map(String::as_str).unwrap_or("");
        let dest = refspec.rsplit(':').next().unwrap_or("").trim_start_matches("refs/heads/");
        if refspec.starts_with('+') || matches!(dest, "main" | "master") {
            return Err(format!("pushes {refspec}: never a forced refspec, never to main"));
        }
    }
    Ok(())
}

/// Every problem of one runbook's commands, as `file: command: why` lines.
fn wrong_commands(file: &Path, text: &str, workspace: bool) -> (usize, Vec<String>) {
    let mut wrong = Vec::new();
    let shown = commands(text);
    for s in &shown {
        let checked = if workspace { true } else { matches!(program(&s.words), Program::Host | Program::Xtask) };
        let problem = match (checked, parses(s)) {
            (false, _) => continue,
            (true, Err(clap::error::ErrorKind::InvalidSubcommand)) if program(&s.words) == Program::Other => {
                format!("runs {}, which is not a program the playbooks may run on a host", s.words[0])
            }
            (true, Err(kind)) => kind.to_string(),
            (true, Ok(())) => match policy(file, s) {
                Ok(()) => continue,
                Err(why) => why,
            },
        };
        wrong.push(format!("{}: `{}`: {problem}", file.display(), s.command));
    }
    if workspace && text.lines().any(|l| ["```sh", "```bash", "```shell", "```console"].contains(&l.trim())) {
        wrong.push(format!(
            "{}: a shell fence: show commands as indented lines so this test reads them",
            file.display()
        ));
    }
    (shown.len(), wrong)
}

#[test]
fn every_command_the_runbooks_show_parses() {
    let root = testkit::repo_root();
    let (mut workspace, mut others) = (Vec::new(), Vec::new());
    markdown_files(&root.join("clawdinator/workspace"), &mut workspace);
    markdown_files(&root.join("clawdinator/workspace-babelfish"), &mut workspace);
    markdown_files(&root.join("memory"), &mut others);
    // The operators' runbooks too (their own tools, aws or nix, are theirs).
    others.push(root.join("docs/journeys.md"));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (file, is_workspace) in workspace.iter().map(|f| (f, true)).chain(others.iter().map(|f| (f, false))) {
        let (count, problems) = wrong_commands(file, &std::fs::read_to_string(file).unwrap(), is_workspace);
        checked += count;
        wrong.extend(problems);
    }
    assert!(wrong.is_empty(), "runbook commands that are wrong:\n{}", wrong.join("\n"));
    assert!(checked >= 40, "only {checked} commands found: the scan is broken");
}

#[test]
fn the_scan_catches_a_wrong_command() {
    let text = concat!(
        "    clawdinator memory edit ops.md --replace a --with b\n",
        "run `clawdinator memory rewrite ops.md` or `clawdinator\nbootstrap fetch`\n",
        "    clawdinator bootstrap fetch\n",
    );
    let found = commands(text);
    assert_eq!(found.len(), 4, "{found:?}");
    // Whole lines first, then mentions.
    assert_eq!(parses(&found[0]), Ok(()));
    assert!(parses(&found[1]).is_err(), "a whole line without its required flags passed");
    assert!(parses(&found[2]).is_err(), "a command that does not exist passed");
    assert_eq!(parses(&found[3]), Ok(()), "a mention was held to a whole line");
    assert_eq!(words("echo \"a b\" x | y"), ["echo", "a b", "x"]);
    assert_eq!(words("git remote add x y 2>/dev/null"), ["git", "remote", "add", "x", "y"]);
}

#[test]
fn a_line_may_leave_out_only_what_the_environment_gives() {
    // --bucket falls back to S3_BUCKET; --keep has no such fallback.
    let by_env = commands("    cargo xtask image ami prune --keep 5\n");
    assert_eq!(parses(&by_env[0]), Ok(()));
    let missing = commands("    clawdinator memory edit ops.md --with b\n    cargo xtask image ami prune\n");
    assert!(parses(&missing[0]).is_err(), "--replace has no environment fallback, yet passed");
    assert!(parses(&missing[1]).is_err(), "--keep has no environment fallback, yet passed");
}

#[test]
fn a_line_is_split_into_its_commands() {
    let shown =
        commands("    sha=$(git rev-parse HEAD) && pnpm lint && pnpm build; gh pr view \"$pr\" -R o/r | jq .\n");
    let got: Vec<&str> = shown.iter().map(|s| s.words[0].as_str()).collect();
    assert_eq!(got, ["pnpm", "pnpm", "gh", "jq", "git"], "{shown:?}");
    // A fenced template is not scanned; an assignment alone is no command.
    assert!(commands("```text\n    gh pr close 1\n```\n    pr=1234\n").is_empty());
}

/// The proposal AGENTS.md shows parses, its token taken from the gateway's
/// environment (never from a path under /run/clawd written in the command).
#[test]
fn a_fleet_proposal_is_the_one_issue_a_playbook_may_open() {
    let line = "    GH_CONFIG_DIR=\"$CLAWDINATOR_PROPOSALS_GH_CONFIG_DIR\" gh issue create -R openclaw/clawdinators \\\n      --title \"proposal: x\" --body-file /tmp/proposal.md\n";
    assert_eq!(wrong_commands(Path::new("AGENTS.md"), line, true), (1, vec![]));
    let by_path = "    GH_CONFIG_DIR=/run/clawd/gh-proposals gh issue create -R openclaw/clawdinators --title t --body-file p.md\n";
    assert_eq!(wrong_commands(Path::new("AGENTS.md"), by_path, true).1.len(), 1, "a token dir named in a command");
}

/// Each line is a playbook command an attacker (or a careless edit) might
/// slip into a workspace file; each must be refused, with its reason.
#[test]
fn dangerous_or_unknown_commands_are_refused() {
    let attacks = [
        ("    gh pr close \"$pr\" -R openclaw/openclaw\n", "closing a pull request"),
        (
            "    gh pr merge \"$pr\" -R openclaw/openclaw --rebase --admin --match-head-commit \"$sha\"\n",
            "an admin merge",
        ),
        ("    gh pr merge \"$pr\" -R openclaw/openclaw --rebase\n", "a merge not pinned to the tested head"),
        ("    gh pr merge \"$pr\" -R openclaw/openclaw --rebase --squash --match-head-commit x\n", "two methods"),
        (
            "    gh pr merge \"$pr\" -R openclaw/clawdinators --squash --match-head-commit \"$sha\"\n",
            "a merge in the fleet's repo",
        ),
        ("    gh pr comment \"$pr\" --body-file note.md\n", "a write whose repository the cwd decides"),
        ("    gh api -X DELETE /repos/openclaw/openclaw/git/refs/heads/x\n", "an api write"),
        (
            "    gh issue create -R openclaw/openclaw --title t --body-file p.md\n",
            "an issue outside the fleet's repository",
        ),
        ("    gh issue create --title t --body-file p.md\n", "an issue whose repository the cwd decides"),
        ("    gh issue comment 1 -R openclaw/clawdinators --body-file p.md\n", "an issue write other than a proposal"),
        ("    gh pr create -R openclaw/clawdinators --title t --body-file p.md\n", "a pull request on the fleet"),
        ("    git push --force prhead HEAD:feature\n", "a plain force push"),
        ("    git push -f prhead HEAD:feature\n", "a short force push"),
        ("    git push --force-with-lease prhead HEAD:feature\n", "a lease without the expected commit"),
        ("    git push --force-with-lease=main:abc origin HEAD:main\n", "a push to main"),
        ("    git push --force-with-lease=f:abc origin +HEAD:f\n", "a forced refspec"),
        ("    cat /run/clawd/gh/token\n", "printing the GitHub token"),
        ("    clawdinator memory write x.md < /run/agenix/clawdinator-anthropic-api-key\n", "a secret into memory"),
        ("    committer \"fix: x\" CHANGELOG.md\n", "a tool the host does not have"),
        ("    pnpm publish\n", "a pnpm command outside the gate"),
        ("```sh\ngh pr close 1\n```\n", "a shell fence the scan would skip"),
    ];
    for (text, what) in attacks {
        let (_, wrong) = wrong_commands(Path::new("skills/landpr/SKILL.md"), text, true);
        assert!(!wrong.is_empty(), "{what} passed: {text}");
    }
    // Closing stays possible for the canned responses, outside landpr.
    let close = "    gh pr close \"$pr\" -R openclaw/openclaw\n";
    assert_eq!(wrong_commands(Path::new("AGENTS.md"), close, true).1, Vec::<String>::new());
    let elsewhere = "    gh pr close \"$pr\" -R openclaw/clawhub\n";
    assert!(!wrong_commands(Path::new("AGENTS.md"), elsewhere, true).1.is_empty(), "a close outside openclaw/openclaw");
    let fine = concat!(
        "    git push --force-with-lease=\"$head:$head_sha\" \"$head_url\" \"HEAD:$head\"\n",
        "    gh pr merge \"$pr\" -R openclaw/openclaw --rebase --match-head-commit \"$land_sha\"\n",
        "    pnpm lint && pnpm build && pnpm test\n",
    );
    assert_eq!(wrong_commands(Path::new("fine.md"), fine, true).1, Vec::<String>::new());
}

/// The rules of the room AGENTS.md must state, each by a phrase it uses.
const ROOM_RULES: &[(&str, &str)] = &[
    ("[#", "masked links to issues and pull requests"),
    ("](<https://", "masked links whose preview is suppressed"),
    ("<@", "mentions by user ID"),
    ("no tables", "no tables in Discord"),
    ("one reply", "one batched reply"),
    ("react", "reactions to acknowledge"),
    ("three messages in a row", "never three messages in a row"),
    ("stay quiet", "when to stay quiet"),
    ("redact", "redacting secrets in pasted output"),
    ("verbatim", "canned responses used verbatim"),
    ("maintainers.md", "never on a maintainer's pull request"),
    ("assigned", "never on a pull request a maintainer has taken"),
    ("clawdinator version", "the startup message's version"),
    ("/etc/clawdinator/instance-name", "the startup message's host"),
];

fn missing_rules(text: &str) -> Vec<&'static str> {
    let lower = text.to_lowercase();
    ROOM_RULES.iter().filter(|(phrase, _)| !lower.contains(&phrase.to_lowercase())).map(|(_, rule)| *rule).collect()
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

#[test]
fn agents_md_states_the_rules_of_the_room() {
    let text = std::fs::read_to_string(testkit::repo_root().join("clawdinator/workspace/AGENTS.md")).unwrap();
    assert_eq!(missing_rules(&text), Vec::<&str>::new(), "AGENTS.md lacks these rules");
    assert!(word_count(&text) >= 1200, "AGENTS.md has {} words: the rules of the room are thin", word_count(&text));
    // The check fails on the old, short AGENTS.md's kind of text.
    let stripped = text.replace("[#", "").replace("<@", "").to_lowercase().replace("verbatim", "");
    assert_eq!(missing_rules(&stripped).len(), 3, "{:?}", missing_rules(&stripped));
}

#[test]
fn soul_md_gives_a_voice_with_examples() {
    let text = std::fs::read_to_string(testkit::repo_root().join("clawdinator/workspace/SOUL.md")).unwrap();
    assert!(word_count(&text) >= 448, "SOUL.md has {} words, fewer than the original's 448", word_count(&text));
    for heading in ["## In a review", "## In a triage", "## In a refusal", "## The scale"] {
        assert!(text.contains(heading), "SOUL.md has no `{heading}` section");
    }
}

/// Host paths the agents may read, each with the module (or user-data)
/// file and the text there that makes it so. A path a runbook names must be
/// one of these or lie under one.
const AGENT_PATHS: &[(&str, &str, &str)] = &[
    ("/etc/clawdinator/instance-name", "infra/opentofu/aws/user-data.sh.tftpl", "fact instance-name"),
    (
        "/etc/clawdinator/build-info.json",
        "nix/modules/clawdinator/base.nix",
        "environment.etc.\"clawdinator/build-info.json\"",
    ),
    ("/etc/clawd/tools.md", "nix/modules/clawdinator/gateway.nix", "environment.etc.\"clawd/tools.md\""),
    ("/var/lib/clawd", "nix/modules/clawdinator/base.nix", "default = \"/var/lib/clawd\""),
    ("/memory", "nix/modules/clawdinator/memory.nix", "\"/memory\""),
];

/// Root's directory (lib.nix's `rootDir`, 0700 root in base.nix).
const ROOT_DIR: &str = "/var/lib/clawdinator";

/// Absolute paths a text names: backtick spans and code words starting with `/`.
fn named_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for span in text.split('`').skip(1).step_by(2).chain(text.lines().filter(|l| l.starts_with("    "))) {
        for w in span.split_whitespace() {
            let w = w.trim_matches(|c: char| matches!(c, '(' | ')' | ',' | '.' | ':' | '"' | '\''));
            if w.starts_with('/') && w.len() > 1 {
                found.push(w.to_string());
            }
        }
    }
    found
}

fn unreadable_paths(text: &str) -> Vec<String> {
    let allowed = |p: &str| {
        AGENT_PATHS.iter().any(|(a, _, _)| p == *a || p.strip_prefix(a).is_some_and(|rest| rest.starts_with('/')))
    };
    named_paths(text).into_iter().filter(|p| !allowed(p)).collect()
}

#[test]
fn identity_and_architecture_name_only_paths_an_agent_reads() {
    let root = testkit::repo_root();
    for (path, file, proof) in AGENT_PATHS {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains(proof), "{path}: {file} no longer says `{proof}`: update AGENT_PATHS");
    }
    for file in ["clawdinator/workspace/IDENTITY.md", "memory/architecture.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert_eq!(unreadable_paths(&text), Vec::<String>::new(), "{file} names paths an agent cannot read");
        assert!(!named_paths(&text).is_empty(), "{file} names no path: the scan is broken");
    }
    // The deployment record is root's: naming it fails.
    assert_eq!(
        unreadable_paths("read `/var/lib/clawdinator/deployment.json`"),
        ["/var/lib/clawdinator/deployment.json"]
    );
    assert_eq!(
        unreadable_paths("`/var/lib/clawd-evil/x` and `/memory2`").len(),
        2,
        "a prefix that is not a parent passed"
    );
}

#[test]
fn no_agent_text_names_roots_directory() {
    let root = testkit::repo_root();
    let lib = std::fs::read_to_string(root.join("nix/modules/clawdinator/lib.nix")).unwrap();
    assert!(lib.contains(&format!("rootDir = \"{ROOT_DIR}\"")), "lib.nix's rootDir moved: update ROOT_DIR");
    for dir in SECRET_DIRS {
        let name = if *dir == "/run/agenix" { "agenix" } else { "runDir" };
        assert!(lib.contains(&format!("{name} = \"{dir}\"")), "lib.nix's {name} moved: update SECRET_DIRS");
    }
    let mut files = Vec::new();
    markdown_files(&root.join("clawdinator/workspace"), &mut files);
    markdown_files(&root.join("clawdinator/workspace-babelfish"), &mut files);
    files.extend(["architecture.md", "index.md", "project.md", "discord.md"].map(|f| root.join("memory").join(f)));
    let naming: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(ROOT_DIR))
        .map(|f| f.display().to_string())
        .collect();
    assert!(naming.is_empty(), "agent-facing files name root's {ROOT_DIR} (agents cannot read it): {naming:?}");
}
