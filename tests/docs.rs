//! The documentation is checked, not trusted: README.md and every page in
//! `docs/` are read as Markdown and
//!
//! 1. every relative link (`[..](path)`, `[..](path#anchor)`, `[..](#anchor)`)
//!    names a file or directory that exists and, with an anchor, a heading of
//!    that page (GitHub's slugs), so a page moved or a heading renamed breaks
//!    here and not for a reader;
//! 2. every ```toml block that is a configuration file (it has a `[section]`
//!    header of `Config`) is loaded by `Config::from_parts`, validation
//!    included, with `DATABASE_URL` set (and `CLICKHOUSE_PASSWORD`, see
//!    `config_env`). A block that is deliberately not a loadable config (a
//!    placeholder the reader fills in, a fragment) says so on the line before
//!    its fence with
//!
//!    ```text
//!    <!-- config not checked: why -->
//!    ```
//!
//!    (an HTML comment, invisible on GitHub). Such a block must still be TOML
//!    and name only real sections;
//! 3. every shell line that runs `plausible-webhooks <subcommand>` (in sh and
//!    console blocks, and in inline code in the text) names a subcommand the
//!    binary has: `<subcommand> --help` exits 0, down to nested ones such as
//!    `triggers add`;
//! 4. the README stays short (at most 250 lines) and its first code block is
//!    the two commands, the demo and the tests (the cargo commands, or the
//!    scripts that install what they need and end by running them), and
//!    nothing else.
//!
//! No database is needed: only files and `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use plausible_webhooks::config::Config;

const README_MAX_LINES: usize = 250;
const NOT_CHECKED_MARKER: &str = "<!-- config not checked:";
/// The top-level tables of `Config`: a ```toml block holding one of them
/// is a configuration file.
const CONFIG_SECTIONS: &[&str] = plausible_webhooks::config::SECTIONS;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md, in a stable order.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

struct Block {
    /// The fence's info string (`sh`, `toml`, …).
    info: String,
    /// 1-based line of the opening fence.
    line: usize,
    lines: Vec<String>,
    /// The line just before the opening fence.
    above: String,
}

/// A page split into its fenced code blocks and its prose; the prose keeps one
/// entry per line (a block's lines are left empty) so line numbers stay true.
struct Doc {
    path: PathBuf,
    prose: Vec<String>,
    blocks: Vec<Block>,
}

fn parse(path: &Path) -> Doc {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", rel(path)));
    let (mut prose, mut blocks) = (Vec::new(), Vec::new());
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        // Fences may be indented (a block inside a list item).
        let t = line.trim_start();
        match open.as_mut() {
            Some(b) => {
                if t.trim_end() == "```" {
                    blocks.push(open.take().unwrap());
                } else {
                    b.lines.push(line.to_string());
                }
                prose.push(String::new());
            }
            None if t.starts_with("```") => {
                open = Some(Block {
                    info: t[3..].trim().to_string(),
                    line: i + 1,
                    lines: Vec::new(),
                    above: prose.last().cloned().unwrap_or_default(),
                });
                prose.push(String::new());
            }
            None => prose.push(line.to_string()),
        }
    }
    assert!(
        open.is_none(),
        "{}: a code block is never closed",
        rel(path)
    );
    Doc {
        path: path.to_path_buf(),
        prose,
        blocks,
    }
}

/// GitHub's anchor for a heading: lower case, inline-code backticks and other
/// punctuation dropped (letters, digits, `-` and `_` kept), spaces to `-`;
/// a repeated heading gets `-1`, `-2`, ….
fn slugs(doc: &Doc) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in &doc.prose {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of the prose's inline links, with their line numbers. A link's
/// text may wrap onto the next line; its target does not.
fn link_targets(doc: &Doc) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in doc.prose.iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after
                .find(|c: char| c == ')' || c.is_whitespace())
                .unwrap_or(after.len());
            out.push((i + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let docs: Vec<Doc> = pages().iter().map(|p| parse(p)).collect();
    let anchors: BTreeMap<PathBuf, BTreeSet<String>> = docs
        .iter()
        .map(|d| (d.path.canonicalize().unwrap(), slugs(d)))
        .collect();
    let (mut broken, mut checked) = (Vec::new(), 0);
    for doc in &docs {
        for (line, target) in link_targets(doc) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                doc.path.clone()
            } else {
                doc.path.parent().unwrap().join(file)
            };
            let at = format!("{}:{line}: ({target})", rel(&doc.path));
            let Ok(path) = path.canonicalize() else {
                broken.push(format!("{at}: no such file"));
                continue;
            };
            if let Some(anchor) = anchor {
                match anchors.get(&path) {
                    Some(slugs) if slugs.contains(anchor) => {}
                    Some(slugs) => broken.push(format!(
                        "{at}: no heading #{anchor} on that page (it has: {})",
                        slugs.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    None => broken.push(format!("{at}: an anchor into a page that is not checked")),
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the parser blind?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The environment the config blocks are loaded with. `CLICKHOUSE_PASSWORD`
/// because the ClickHouse example names a password file that exists only on a
/// server; the variable is the documented alternative and is read first.
/// `SECRET_KEY_BASE` as the env file the docs set it in holds it (the web
/// page's example needs it).
fn config_env() -> BTreeMap<String, String> {
    [
        ("DATABASE_URL", "postgres://u@h/db"),
        ("CLICKHOUSE_PASSWORD", "from-the-environment"),
        (
            "SECRET_KEY_BASE",
            "docs-example-secret-key-base-0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The top-level section names of the `[section]` / `[section.sub]` headers.
fn sections(block: &Block) -> Vec<String> {
    block
        .lines
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            let name = l.strip_prefix('[')?.split(']').next()?;
            (!name.starts_with('[')).then(|| name.split('.').next().unwrap().trim().to_string())
        })
        .collect()
}

#[test]
fn every_config_example_loads() {
    let (mut failed, mut loaded) = (Vec::new(), 0);
    for page in pages() {
        let doc = parse(&page);
        for block in doc.blocks.iter().filter(|b| b.info == "toml") {
            let at = format!("{}:{}", rel(&doc.path), block.line);
            let text = block.lines.join("\n") + "\n";
            let found = sections(block);
            if block.above.trim_start().starts_with(NOT_CHECKED_MARKER) {
                // Not loadable on purpose, but still TOML about real sections.
                if let Err(e) = text.parse::<toml::Table>() {
                    failed.push(format!("{at} (marked): not TOML: {e}"));
                }
                for s in found
                    .iter()
                    .filter(|s| !CONFIG_SECTIONS.contains(&s.as_str()))
                {
                    failed.push(format!("{at} (marked): [{s}] is not a config section"));
                }
                continue;
            }
            if !found.iter().any(|s| CONFIG_SECTIONS.contains(&s.as_str())) {
                continue;
            }
            loaded += 1;
            if let Err(e) = Config::from_parts(&text, &config_env()) {
                failed.push(format!(
                    "{at}: {e}\n  (mark it `{NOT_CHECKED_MARKER} why -->` on the line before if it is not meant to load)"
                ));
            }
        }
    }
    assert!(loaded > 0, "no config example found: is the parser blind?");
    assert!(
        failed.is_empty(),
        "config examples that do not load:\n{}",
        failed.join("\n")
    );
}

/// Inline code spans of the prose (a run of n backticks up to the next run of
/// exactly n), newlines inside a span read as spaces.
fn code_spans(prose: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    // Paragraphs, so a span may wrap; the line is where it starts.
    let mut para: Vec<(usize, &str)> = Vec::new();
    let mut flush = |para: &mut Vec<(usize, &str)>| {
        let text: String = para.iter().map(|(_, l)| *l).collect::<Vec<_>>().join(" ");
        let starts: Vec<usize> = para
            .iter()
            .scan(0, |off, (_, l)| {
                let s = *off;
                *off += l.len() + 1;
                Some(s)
            })
            .collect();
        let line_of = |pos: usize| para[starts.iter().rposition(|&s| s <= pos).unwrap()].0;
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'`' {
                i += 1;
                continue;
            }
            let n = b[i..].iter().take_while(|&&c| c == b'`').count();
            let open = i;
            i += n;
            let mut j = i;
            let mut close = None;
            while j < b.len() {
                if b[j] == b'`' {
                    let m = b[j..].iter().take_while(|&&c| c == b'`').count();
                    if m == n {
                        close = Some(j);
                        break;
                    }
                    j += m;
                } else {
                    j += 1;
                }
            }
            if let Some(c) = close {
                out.push((line_of(open), text[i..c].trim().to_string()));
                i = c + n;
            }
        }
        para.clear();
    };
    for (i, line) in prose.iter().enumerate() {
        if line.trim().is_empty() {
            flush(&mut para);
        } else {
            para.push((i + 1, line));
        }
    }
    flush(&mut para);
    out
}

/// Shell command lines: sh/bash blocks line by line, console blocks' `$ `
/// lines, continuations (`\` at the end) joined, comments dropped; plus inline
/// code that starts with the binary's name.
fn shell_lines(doc: &Doc) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in &doc.blocks {
        let console = b.info == "console";
        if !console && !matches!(b.info.as_str(), "sh" | "bash" | "shell") {
            continue;
        }
        let mut cur: Option<(usize, String)> = None;
        for (k, line) in b.lines.iter().enumerate() {
            let line = match (&cur, console) {
                (Some(_), _) | (None, false) => line.trim().to_string(),
                (None, true) => match line.strip_prefix("$ ") {
                    Some(cmd) => cmd.trim().to_string(),
                    None => continue, // output
                },
            };
            let (start, mut text) = cur.take().unwrap_or((b.line + 1 + k, String::new()));
            text.push(' ');
            text.push_str(line.strip_suffix('\\').unwrap_or(&line));
            if line.ends_with('\\') {
                cur = Some((start, text));
            } else {
                out.push((format!("{}:{start}", rel(&doc.path)), text));
            }
        }
    }
    for (line, span) in code_spans(&doc.prose) {
        if span.starts_with("plausible-webhooks ") {
            out.push((format!("{}:{line}", rel(&doc.path)), span));
        }
    }
    // Drop comments: `#` at the start of a word.
    out.into_iter()
        .map(|(at, l)| {
            let words: Vec<&str> = l
                .split_whitespace()
                .take_while(|w| !w.starts_with('#'))
                .collect();
            (at, words.join(" "))
        })
        .collect()
}

/// The words after `plausible-webhooks` wherever it is the command of a
/// pipeline segment (not `journalctl -u plausible-webhooks`), the global
/// options (`--config FILE`, `--json`) left out.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let line = line
        .replace("&&", ";")
        .replace("||", ";")
        .replace("$(", ";");
    for segment in line.split([';', '|', '(', ')']) {
        let mut words = segment
            .split_whitespace()
            // Environment assignments before the command.
            .skip_while(|w| w.contains('=') && !w.starts_with('-'));
        if words.next() != Some("plausible-webhooks") {
            continue;
        }
        let mut args = Vec::new();
        let mut words = words.peekable();
        while let Some(w) = words.next() {
            match w {
                "--config" | "-c" => {
                    words.next();
                }
                "--json" => {}
                w if w.starts_with("--config=") => {}
                w => args.push(w.trim_matches(['"', '\'']).to_string()),
            }
        }
        out.push(args);
    }
    out
}

/// Runs `plausible-webhooks <path…> --help`: `Some(help text)` on exit 0.
fn help(path: &[String]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"))
        .args(path)
        .arg("--help")
        .env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
        .output()
        .expect("run the binary");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_documented_subcommand_exists() {
    // Each distinct subcommand path, with the first place that uses it.
    let mut paths: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut cache: BTreeMap<Vec<String>, Option<String>> = BTreeMap::new();
    let mut help_of = |p: &[String]| cache.entry(p.to_vec()).or_insert_with(|| help(p)).clone();
    let mut missing = Vec::new();
    for page in pages() {
        let doc = parse(&page);
        for (at, line) in shell_lines(&doc) {
            for args in invocations(&line) {
                // A word is a subcommand while the command before it has
                // subcommands (its help lists "Commands:"); the rest are
                // arguments.
                let mut path: Vec<String> = Vec::new();
                for w in args.iter().take_while(|w| !w.starts_with('-')) {
                    let parent = help_of(&path).unwrap_or_default();
                    if !parent.contains("\nCommands:") {
                        break;
                    }
                    path.push(w.clone());
                    if help_of(&path).is_none() {
                        missing.push(format!(
                            "{at}: `plausible-webhooks {}` is not a subcommand (`{line}`)",
                            path.join(" ")
                        ));
                        break;
                    }
                }
                if !path.is_empty() {
                    paths.entry(path).or_insert(at.clone());
                }
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    // Vacuous otherwise: the docs run create, test, triggers add, deliveries list, ….
    assert!(
        paths.len() >= 10 && paths.keys().any(|p| p.len() == 2),
        "only these subcommands found: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
}

#[test]
fn readme_is_short_and_starts_with_the_two_commands() {
    let path = root().join("README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move reference text into docs/"
    );
    let doc = parse(&path);
    let first = doc.blocks.first().expect("README.md has no code block");
    // The commands, each line's trailing comment aside.
    let commands: Vec<String> = first
        .lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .collect();
    let [demo, tests] = commands.as_slice() else {
        panic!(
            "README.md's first code block (line {}) must be exactly the two commands, demo and tests; it has {}: {commands:?}",
            first.line,
            commands.len()
        );
    };
    // Each is the cargo command itself, or a script of this repository that
    // installs what it needs and then runs it.
    let runs = |command: &str, what: &str, cargo: &str| {
        if let Some(script) = command.strip_prefix("scripts/") {
            let path = root().join("scripts").join(script);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("README.md's {what} command `{command}`: {e}"));
            use std::os::unix::fs::PermissionsExt as _;
            assert!(
                path.metadata().unwrap().permissions().mode() & 0o111 != 0,
                "{command} is not executable: README.md runs it as written"
            );
            let exec = format!("exec {cargo} \"$@\"");
            assert!(
                text.lines().any(|l| l.trim() == exec),
                "{command} must end by running the {what} (`{exec}`)"
            );
        } else {
            assert!(
                command.starts_with(cargo.split(" -- ").next().unwrap()),
                "README.md's {what} command must be `{cargo}` or a script that runs it, not `{command}`"
            );
        }
    };
    runs(demo, "demo", "cargo run --features demo -- demo");
    runs(tests, "tests", "cargo nextest run");
}

/// The example config's pointers into the documentation (`docs/x.md
/// "Heading"`, or `README "Heading"`) name a heading that page has: the
/// config is read on servers, where a moved section is no link to click.
#[test]
fn the_example_configs_pointers_name_real_headings() {
    let path = root().join("config/plausible-webhooks.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Comments only, joined, so a pointer may wrap onto the next line.
    let comments: String = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .map(|l| l.trim_start_matches(['#', ' ']))
        .collect::<Vec<_>>()
        .join(" ");
    let headings = |page: &Path| -> Vec<String> {
        parse(page)
            .prose
            .iter()
            .filter(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim().to_string())
            .collect()
    };
    let (mut checked, mut broken) = (0, Vec::new());
    for (at, _) in comments.match_indices(" \"") {
        let before = &comments[..at];
        let page = before.rsplit([' ', '(']).next().unwrap_or("");
        let file = match page {
            "README" => root().join("README.md"),
            p if p.starts_with("docs/") && p.ends_with(".md") => root().join(p),
            _ => continue,
        };
        let heading = comments[at + 2..].split('"').next().unwrap();
        checked += 1;
        if !file.exists() {
            broken.push(format!("{page}: no such page"));
        } else if !headings(&file).iter().any(|h| h == heading) {
            broken.push(format!("{page} has no heading \"{heading}\""));
        }
    }
    assert!(
        checked >= 2,
        "only {checked} pointers found: is the parser blind?"
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// docs/events.md lists every built-in event type the catalog has.
#[test]
fn the_event_catalog_page_names_every_built_in_type() {
    let page = std::fs::read_to_string(root().join("docs/events.md")).unwrap();
    for e in plausible_webhooks::admin::catalog::catalog() {
        assert!(
            page.contains(&format!("| `{}` |", e.name)),
            "docs/events.md has no row for {}",
            e.name
        );
    }
}
