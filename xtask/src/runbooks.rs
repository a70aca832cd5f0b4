//! The agents' runbooks (`clawdinator/workspace`, `memory/`) are correct
//! about this project's commands: every `clawdinator …` or `cargo xtask …`
//! command they show parses against that binary's own definition (the host
//! binary's for `clawdinator`, which is all a host has), so a renamed flag
//! or command fails here before an agent trips on it. Unit tests only.

use std::path::{Path, PathBuf};

use clap::Parser;
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

/// Words of a shell command line: double or single quotes group, `<`, `|`,
/// `;` and `#` end the command (what follows is the shell's, not ours).
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => (quote, started) = (Some(c), true),
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

/// A command a runbook shows: a whole command line (an indented code
/// line), or a mention in running text (a backtick span, which may name a
/// command without all its arguments).
#[derive(Debug)]
struct Shown {
    command: String,
    mention: bool,
}

/// The commands a runbook shows, including one a pipe feeds. A backtick
/// span broken across lines is joined first.
fn commands(text: &str) -> Vec<Shown> {
    let mut found = Vec::new();
    let mut push = |candidate: &str, mention: bool| {
        let tail = candidate.rsplit("| ").next().unwrap_or(candidate).trim();
        if tail.starts_with("clawdinator ") || tail.starts_with("cargo xtask ") {
            found.push(Shown { command: tail.to_string(), mention });
        }
    };
    for line in text.lines().filter(|l| l.starts_with("    ")) {
        push(line.trim(), false);
    }
    let prose: String = text.lines().filter(|l| !l.starts_with("    ")).collect::<Vec<_>>().join(" ");
    for span in prose.split('`').skip(1).step_by(2) {
        push(span, true);
    }
    found
}

/// Whether the CLI takes the command: a mention may leave out what is
/// required, never name a command or flag that does not exist.
fn parses(shown: &Shown) -> Result<(), clap::error::ErrorKind> {
    use clap::error::ErrorKind::*;
    let mut argv: Vec<String> = words(&shown.command).into_iter().filter(|w| w != "…").collect();
    let parsed = if argv[0] == "cargo" {
        argv.remove(0);
        Xtask::try_parse_from(&argv).map(|_| ())
    } else {
        Clawdinator::try_parse_from(&argv).map(|_| ())
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

#[test]
fn every_command_the_runbooks_show_parses() {
    let root = testkit::repo_root();
    let mut files = Vec::new();
    markdown_files(&root.join("clawdinator/workspace"), &mut files);
    markdown_files(&root.join("memory"), &mut files);
    // The operators' runbooks too.
    files.push(root.join("docs/journeys.md"));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        for shown in commands(&std::fs::read_to_string(file).unwrap()) {
            checked += 1;
            if let Err(kind) = parses(&shown) {
                wrong.push(format!("{}: `{}`: {kind}", file.display(), shown.command));
            }
        }
    }
    assert!(wrong.is_empty(), "runbook commands that do not parse:\n{}", wrong.join("\n"));
    assert!(checked >= 8, "only {checked} commands found: the scan is broken");
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
}
