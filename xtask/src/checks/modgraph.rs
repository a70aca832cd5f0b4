//! The module graph of every crate, from the source: which module file
//! uses which (through `crate::`, `super::`, `self::` and child-module
//! paths, in `use` trees and in code). A circle between two files, or
//! between two top-level modules (stages) of a crate, fails the check.
//! Inline modules (`mod tests { … }`) are left out: a unit test may use
//! what it likes. Cargo forbids circles between crates by itself.
//!
//! Flag definitions (`flags.rs` of a crate or a stage) depend on no code:
//! the workflow and module checks parse command lines against them, so a
//! flags module may use only other flags modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The crates' source folders, from the repository root.
pub const CRATES: [&str; 4] = ["clawdinator/src", "control-api/src", "xtask/src", "xtask/testkit/src"];

/// Module (a path like `image/publish`, "" for the crate root) -> the modules it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every crate's graph has no circle: the summary, or every circle found.
pub fn check(root: &Path) -> Result<String> {
    let mut problems = Vec::new();
    let mut files = 0;
    for dir in CRATES {
        let graph = crate_graph(&root.join(dir))?;
        files += graph.len();
        for circle in circles(&graph) {
            problems.push(format!("{dir}: files {}", circle.join(" -> ")));
        }
        for circle in circles(&top_level(&graph)) {
            problems.push(format!("{dir}: top-level modules {}", circle.join(" -> ")));
        }
        problems.extend(flags_using_code(&graph).into_iter().map(|p| format!("{dir}: {p}")));
    }
    if !problems.is_empty() {
        bail!("import circles:\n  {}", problems.join("\n  "));
    }
    Ok(format!("{} crates, {files} module files, no circle, flags use only flags", CRATES.len()))
}

fn is_flags(module: &str) -> bool {
    module == "flags" || module.ends_with("/flags")
}

/// Each flags module that uses a module other than flags, with what it uses.
fn flags_using_code(graph: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for (module, uses) in graph.iter().filter(|(m, _)| is_flags(m)) {
        let code: Vec<&str> = uses.iter().map(String::as_str).filter(|u| !is_flags(u)).collect();
        if !code.is_empty() {
            found.push(format!("{module} (flag definitions) uses {}: flags may use only flags", code.join(", ")));
        }
    }
    found
}

/// The graph of the crate whose sources are under `src`.
pub fn crate_graph(src: &Path) -> Result<Graph> {
    let modules: BTreeMap<String, PathBuf> =
        rust_files(src)?.into_iter().filter_map(|file| module_name(src, &file).map(|name| (name, file))).collect();
    let mut graph = Graph::new();
    for (name, file) in &modules {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let code = strip(&text);
        let module: Vec<&str> = if name.is_empty() { vec![] } else { name.split('/').collect() };
        let children = child_modules(&code);
        let mut uses = BTreeSet::new();
        for path in paths(&code, &children) {
            if let Some(target) = resolve(&module, &path, &modules) {
                if &target != name {
                    uses.insert(target);
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// `image/publish.rs` -> `image/publish`, `image/mod.rs` -> `image`, the
/// crate root -> ""; `src/bin/*` are crates of their own: None.
fn module_name(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    Some(parts.join("/"))
}

/// The code without comments, string and char literals, and inline modules.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let rest = |n: usize| chars.get(i + n).copied().unwrap_or('\0');
        match chars[i] {
            '/' if rest(1) == '/' => i = line_end(&chars, i),
            '/' if rest(1) == '*' => i = past_block_comment(&chars, i),
            'r' if (rest(1) == '"' || rest(1) == '#') && !ident_char(out.chars().last()) => {
                match past_raw_string(&chars, i) {
                    Some(end) => {
                        i = end;
                        out.push_str("\"\"");
                    }
                    None => {
                        out.push('r');
                        i += 1;
                    }
                }
            }
            '"' => {
                i = past_quoted(&chars, i);
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n'), not a lifetime ('a).
            '\'' if rest(2) == '\'' || (rest(1) == '\\' && chars[i + 2..].iter().take(8).any(|c| *c == '\'')) => {
                i = past_quoted(&chars, i);
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    drop_inline_modules(&out)
}

/// Where the line comment beginning at `start` ends (at its newline).
fn line_end(chars: &[char], start: usize) -> usize {
    let mut i = start;
    while i < chars.len() && chars[i] != '\n' {
        i += 1;
    }
    i
}

/// Past the `*/` of the block comment opening at `start`.
fn past_block_comment(chars: &[char], start: usize) -> usize {
    let mut i = start + 2;
    while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
        i += 1;
    }
    i + 2
}

/// Past the raw string literal (`r"…"`, `r#"…"#`) beginning at `start`;
/// None when the `r` begins no raw string.
fn past_raw_string(chars: &[char], start: usize) -> Option<usize> {
    let hashes = chars[start + 1..].iter().take_while(|c| **c == '#').count();
    if chars.get(start + 1 + hashes) != Some(&'"') {
        return None;
    }
    let mut i = start + 2 + hashes;
    let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
    while i < chars.len() && !chars[i..].iter().take(close.len()).copied().eq(close.chars()) {
        i += 1;
    }
    Some(i + close.len())
}

/// Past the string or char literal whose quote is at `start` (escapes
/// skipped).
fn past_quoted(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// `mod name { … }` blocks removed, braces matched.
fn drop_inline_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = find_inline_module(rest) {
        out.push_str(&rest[..at]);
        let open = at + rest[at..].find('{').expect("found with a brace");
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            if depth == 0 {
                end = open + i + 1;
                break;
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn find_inline_module(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("mod ") {
        let at = from + i;
        let before_ok = !ident_char(code[..at].chars().last());
        let after = &code[at + 4..];
        let name_len = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').count();
        if before_ok && name_len > 0 && after[name_len..].trim_start().starts_with('{') {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// Modules this file declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn child_modules(code: &str) -> BTreeSet<String> {
    code.split(';')
        .filter_map(|stmt| {
            let words: Vec<&str> = stmt.split_whitespace().collect();
            let at = words.iter().rposition(|w| *w == "mod")?;
            (at + 2 == words.len()).then(|| words[at + 1].to_string())
        })
        .collect()
}

/// Every path that may name a module: `use` trees expanded, and
/// `crate::`/`super::`/`self::`/`child::` paths in code.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        let tree: String = rest[at + 3..end].chars().filter(|c| !c.is_whitespace()).collect();
        expand(&[], &tree, &mut out);
        rest = &rest[end..];
    }
    let tokens = tokenize_paths(code);
    for path in tokens {
        let first = path[0].as_str();
        if matches!(first, "crate" | "super" | "self") || children.contains(first) {
            out.push(path);
        }
    }
    out
}

fn find_word(code: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find(word) {
        let at = from + i;
        let after = code[at + word.len()..].chars().next();
        if !ident_char(code[..at].chars().last()) && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e (prefixed by `prefix`).
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.strip_prefix("::").unwrap_or(tree);
    if let Some(open) = tree.find('{') {
        let head = &tree[..open];
        let inner = tree[open + 1..].strip_suffix('}').unwrap_or(&tree[open + 1..]);
        let mut base = prefix.to_vec();
        base.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
    } else if !tree.is_empty() {
        let path = tree.split("as").next().unwrap_or(tree);
        let mut full = prefix.to_vec();
        full.extend(path.split("::").filter(|s| !s.is_empty() && *s != "*").map(String::from));
        if !full.is_empty() {
            out.push(full);
        }
    }
}

/// Runs of `ident::ident::…` in code, not preceded by `::`.
fn tokenize_paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) && !(i >= 2 && &bytes[i - 2..i] == b"::") {
            let mut path = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < bytes.len() && is_ident(bytes[j]) {
                    j += 1;
                }
                path.push(code[start..j].to_string());
                if bytes.get(j..j + 2) == Some(b"::") && bytes.get(j + 2).is_some_and(|b| is_ident(*b)) {
                    j += 2;
                } else {
                    break;
                }
            }
            if path.len() > 1 {
                out.push(path);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The module file a path names, the longest known prefix of it.
fn resolve(module: &[&str], path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    // A file `a/b.rs` is module a::b; its `super` is `a`. A `mod.rs` is the
    // folder's module; its `super` is the folder's parent.
    let mut base: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    let mut full = base;
    full.extend(rest.iter().cloned());
    (0..=full.len()).rev().map(|n| full[..n].join("/")).find(|name| known.contains_key(name))
}

/// The graph between top-level modules (the stages), without the crate root.
fn top_level(graph: &Graph) -> Graph {
    let top = |m: &str| m.split('/').next().unwrap_or("").to_string();
    let mut out = Graph::new();
    for (from, uses) in graph.iter().filter(|(m, _)| !m.is_empty()) {
        let entry = out.entry(top(from)).or_default();
        entry.extend(uses.iter().map(|u| top(u)).filter(|u| !u.is_empty() && *u != top(from)));
    }
    out
}

/// Every circle: each strongly connected set of more than one module, as a
/// path through it back to its start.
pub fn circles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for set in strongly_connected(graph).into_iter().filter(|s| s.len() > 1) {
        found.push(circle_through(graph, &set));
    }
    found
}

fn strongly_connected(graph: &Graph) -> Vec<BTreeSet<String>> {
    // Kosaraju: order by finish time, then walk the reversed graph.
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), false)];
        while let Some((node, done)) = stack.pop() {
            if done {
                order.push(node);
                continue;
            }
            if !seen.insert(node.clone()) {
                continue;
            }
            stack.push((node.clone(), true));
            for next in graph.get(&node).into_iter().flatten() {
                if !seen.contains(next) {
                    stack.push((next.clone(), false));
                }
            }
        }
    }
    let mut reversed = Graph::new();
    for (from, uses) in graph {
        for to in uses {
            reversed.entry(to.clone()).or_default().insert(from.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut sets = Vec::new();
    for node in order.into_iter().rev() {
        if assigned.contains(&node) {
            continue;
        }
        let mut set = BTreeSet::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if assigned.insert(n.clone()) {
                stack.extend(reversed.get(&n).into_iter().flatten().filter(|m| !assigned.contains(*m)).cloned());
                set.insert(n);
            }
        }
        sets.push(set);
    }
    sets
}

/// A shortest way from the set's first module back to itself, inside the set.
fn circle_through(graph: &Graph, set: &BTreeSet<String>) -> Vec<String> {
    let start = set.iter().next().expect("a set is never empty").clone();
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(&node).into_iter().flatten().filter(|n| set.contains(*n)) {
            if *next == start {
                let mut path = vec![start.clone()];
                let mut at = node.clone();
                while at != start {
                    path.push(at.clone());
                    at = came_from[&at].clone();
                }
                path.push(start.clone());
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if !came_from.contains_key(next) {
                came_from.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    set.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let file = dir.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_circle_between_two_files_is_found() {
        let dir = tree(&[
            ("lib.rs", "pub mod image;\n"),
            ("image/mod.rs", "pub mod import;\npub mod publish;\n"),
            ("image/import.rs", "use super::publish::Options;\n"),
            ("image/publish.rs", "fn f() { super::import::s3_import(); }\n"),
        ]);
        let graph = crate_graph(dir.path()).unwrap();
        assert_eq!(circles(&graph), vec![vec!["image/import", "image/publish", "image/import"]]);
    }

    #[test]
    fn a_child_through_its_folders_face_is_a_circle() {
        let dir = tree(&[
            ("lib.rs", "pub mod bootstrap;\n"),
            ("bootstrap/mod.rs", "pub mod fetch;\npub use fetch::fetch;\npub struct Manifest;\n"),
            ("bootstrap/fetch.rs", "use crate::bootstrap::{Manifest};\n"),
        ]);
        let graph = crate_graph(dir.path()).unwrap();
        assert_eq!(circles(&graph), vec![vec!["bootstrap", "bootstrap/fetch", "bootstrap"]]);
    }

    #[test]
    fn a_circle_between_stages_is_found_through_different_files() {
        let dir = tree(&[
            ("lib.rs", "pub mod fleet;\npub mod host;\n"),
            ("fleet/mod.rs", "pub mod switch;\n"),
            ("fleet/switch.rs", "fn f() { crate::host::switch::check_revision(); }\n"),
            ("host/mod.rs", "pub mod switch;\npub mod deploy;\n"),
            ("host/switch.rs", ""),
            ("host/deploy.rs", "use crate::fleet::{self};\n"),
        ]);
        let graph = crate_graph(dir.path()).unwrap();
        assert!(circles(&graph).is_empty(), "{:?}", circles(&graph));
        assert_eq!(circles(&top_level(&graph)), vec![vec!["fleet", "host", "fleet"]]);
    }

    #[test]
    fn comments_strings_and_test_modules_do_not_count() {
        let dir = tree(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", "use crate::b::X;\n"),
            (
                "b.rs",
                "// crate::a::Y\n/* crate::a::Z */\nconst S: &str = \"crate::a::W\";\nconst R: &str = r#\"crate::a\"#;\n#[cfg(test)]\nmod tests { use crate::a::*; }\n",
            ),
        ]);
        let graph = crate_graph(dir.path()).unwrap();
        assert_eq!(graph["b"], BTreeSet::new());
        assert!(circles(&graph).is_empty());
    }

    #[test]
    fn code_after_a_block_comment_counts() {
        let dir = tree(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", ""),
            ("b.rs", "/* one * star, crate::a::Z */\nuse crate::a::X;\n"),
        ]);
        let graph = crate_graph(dir.path()).unwrap();
        assert_eq!(graph["b"], BTreeSet::from(["a".to_string()]));
    }

    #[test]
    fn flags_that_use_code_are_found() {
        let dir = tree(&[
            ("lib.rs", "pub mod flags;\npub mod image;\n"),
            ("flags.rs", ""),
            ("image/mod.rs", "pub mod flags;\npub mod build;\n"),
            ("image/flags.rs", "use crate::flags::Global;\nuse super::build::IMAGE_HOST;\n"),
            ("image/build.rs", ""),
        ]);
        let found = flags_using_code(&crate_graph(dir.path()).unwrap());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("image/flags (flag definitions) uses image/build"), "{found:?}");
    }

    #[test]
    fn the_project_has_no_circle() {
        let summary = check(&testkit::repo_root()).unwrap();
        assert!(summary.contains("no circle"), "{summary}");
    }
}
