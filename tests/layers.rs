//! The house follows the data: each module of `src/` may import only from the
//! layers below it (the order `src/lib.rs` documents), the admin's files only
//! from the files below them, and no file imports, through any chain of
//! files, one that imports it. This test reads every path in the source
//! (`crate::`, `super::`, `self::` and a file's own child modules, `use`
//! groups nested at any depth, globs) and fails on an import that points up
//! or closes a cycle, naming the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. Modules on one line are one layer and may not import each
/// other. Must match the order `src/lib.rs` documents.
const LAYERS: &[&[&str]] = &[
    &["metrics", "logging", "https"],
    &["service"],
    &["config"],
    &["db"],
    &["queue"],
    &["delivery"],
    &["triggers"],
    &["admin"],
    &["daemon", "testkit"],
    &["demo"],
];

/// The admin's files, bottom first: the core (rules, outcomes, inputs,
/// access, the operations), then the faces (the CLI, the API, the listener).
const ADMIN_LAYERS: &[&[&str]] = &[
    &["validate", "body"],
    &["catalog"],
    &["error"],
    &["inputs"],
    &["access"],
    &[
        "auth",
        "test_slots",
        "test_sender",
        "plausible_session",
        "portal",
    ],
    &["core", "web_setup"],
    &["ops"],
    &["state"],
    &["api", "metrics", "cli", "web"],
    &["health"],
    &["http"],
];

fn rank(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&name))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `.rs` file of `src/`: its path relative to `src/` and its text.
fn source_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap();
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy());
            (
                rel.collect::<Vec<_>>().join("/"),
                std::fs::read_to_string(f).unwrap(),
            )
        })
        .collect()
}

/// The text with comments and string and character literals blanked, so a
/// path in a doc comment or in SQL is not read as an import.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < c.len() {
        let rest = &c[i..];
        let starts = |p: &str| rest.iter().take(p.len()).copied().eq(p.chars());
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        let end = if starts("//") {
            rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len())
        } else if starts("/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(open) = raw_string_open(rest).filter(|_| !ident_before) {
            let hashes = open - rest.iter().position(|&ch| ch == 'r').unwrap() - 1;
            let mut j = open + 1;
            while j < rest.len() {
                if rest[j] == '"'
                    && rest[j + 1..].iter().take_while(|&&ch| ch == '#').count() >= hashes
                {
                    break;
                }
                j += 1;
            }
            (j + 1 + hashes).min(rest.len())
        } else if rest[0] == '"' || (!ident_before && starts("b\"")) {
            let mut j = rest.iter().position(|&ch| ch == '"').unwrap() + 1;
            while j < rest.len() && rest[j] != '"' {
                j += if rest[j] == '\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if rest[0] == '\'' && rest.get(1) == Some(&'\\') {
            // `'\''`, `'\\'`, `'\u{..}'`: the escaped character is never the end.
            let close = rest.iter().skip(3).position(|&ch| ch == '\'');
            (3 + close.unwrap_or(0) + 1).min(rest.len())
        } else if rest[0] == '\'' && rest.get(2) == Some(&'\'') {
            3
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        };
        blank(&mut out, &rest[..end]);
        i += end;
    }
    out
}

/// Where the opening quote of a raw string (`r"`, `r#"`, `br##"`...) at
/// the start of `s` is; None when `s` starts none (`r#type` is an
/// identifier).
fn raw_string_open(s: &[char]) -> Option<usize> {
    let r = if s.first() == Some(&'b') { 1 } else { 0 };
    if s.get(r) != Some(&'r') {
        return None;
    }
    let hashes = s[r + 1..].iter().take_while(|&&ch| ch == '#').count();
    let open = r + 1 + hashes;
    (s.get(open) == Some(&'"')).then_some(open)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Semi,
    Other,
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_alphabetic() || ch == '_' {
            let n = c[i..]
                .iter()
                .take_while(|x| x.is_alphanumeric() || **x == '_')
                .count();
            out.push(Tok::Ident(c[i..i + n].iter().collect()));
            i += n;
            continue;
        }
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::PathSep);
            i += 2;
            continue;
        }
        // A number is one token: the `f` of `0x1f` starts no identifier.
        if ch.is_ascii_digit() {
            i += c[i..]
                .iter()
                .take_while(|x| x.is_alphanumeric() || **x == '_')
                .count();
            out.push(Tok::Other);
            continue;
        }
        out.push(match ch {
            '{' => Tok::Open,
            '}' => Tok::Close,
            ',' => Tok::Comma,
            '*' => Tok::Star,
            ';' => Tok::Semi,
            _ => Tok::Other,
        });
        i += 1;
    }
    out
}

/// The path tree at `toks[i..]` (`a::b`, `a::{b, c::{d, e}}`, `a::*`,
/// `a as b`), flattened into whole paths; and where it ends.
fn path_tree(toks: &[Tok], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    loop {
        match toks.get(i) {
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                if toks.get(i) == Some(&Tok::Ident("as".into())) {
                    i += 2;
                }
                return (vec![prefix], i);
            }
            Some(Tok::Star) => {
                prefix.push("*".into());
                return (vec![prefix], i + 1);
            }
            Some(Tok::Open) => {
                i += 1;
                let mut out = Vec::new();
                while let Some(t) = toks.get(i) {
                    match t {
                        Tok::Close => {
                            i += 1;
                            break;
                        }
                        Tok::Comma => i += 1,
                        _ => {
                            let (subs, j) = path_tree(toks, i);
                            for s in subs {
                                let mut p = prefix.clone();
                                if s != ["self"] {
                                    p.extend(s);
                                }
                                out.push(p);
                            }
                            // A token no path starts with: step over it.
                            i = j.max(i + 1);
                        }
                    }
                }
                return (out, i);
            }
            _ => return (vec![prefix], i),
        }
    }
}

/// One path as written in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    /// Starting with its root: `crate`, `super`..., `self` or a child
    /// module of the file.
    path: Vec<String>,
    /// The inline modules (`mod tests { ... }`) it is written in.
    inline: Vec<String>,
}

impl Written {
    fn text(&self) -> String {
        self.path.join("::")
    }
}

/// The modules a file declares in files of their own (`mod x;`).
fn child_modules(toks: &[Tok]) -> Vec<String> {
    let mut depth = 0usize;
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth = depth.saturating_sub(1),
            Tok::Ident(m) if m == "mod" && depth == 0 => {
                if let (Some(Tok::Ident(name)), Some(Tok::Semi)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    out.push(name.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// Every path of the crate's own modules a file writes: from `crate::`,
/// `super::`, `self::`, and (outside inline modules) its child modules.
fn written_paths(src: &str) -> Vec<Written> {
    let toks = tokens(&code_only(src));
    let children = child_modules(&toks);
    let mut out = Vec::new();
    let mut depth = 0usize;
    // Open inline modules: name and the brace depth around them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                    i += 2;
                    continue;
                }
            }
            Tok::Ident(root) => {
                let starts_path = toks.get(i + 1) == Some(&Tok::PathSep)
                    && (i == 0 || toks[i - 1] != Tok::PathSep)
                    && (matches!(root.as_str(), "crate" | "super" | "self")
                        || (inline.is_empty() && children.contains(root)));
                if starts_path {
                    let (paths, j) = path_tree(&toks, i);
                    let names: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                    out.extend(paths.into_iter().map(|path| Written {
                        path,
                        inline: names.clone(),
                    }));
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The first segment after each `crate::` (inside `use` groups too).
fn crate_imports(src: &str) -> Vec<String> {
    written_paths(src)
        .into_iter()
        .filter(|w| w.path[0] == "crate" && w.path.len() > 1)
        .map(|w| w.path[1].clone())
        .collect()
}

/// The module a file is: `queue/claimer.rs` is `queue::claimer`,
/// `queue/mod.rs` is `queue`, `lib.rs` the crate root.
fn module_of(file: &str) -> Vec<String> {
    let mut m: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The module a path written in a file's module `m` names, from the crate
/// root; None for a path that leaves the crate (`super` above it).
fn absolute(m: &[String], w: &Written) -> Option<Vec<String>> {
    let here: Vec<String> = m.iter().chain(&w.inline).cloned().collect();
    let p = &w.path;
    match p[0].as_str() {
        "crate" => Some(p[1..].to_vec()),
        "self" => Some(here.into_iter().chain(p[1..].iter().cloned()).collect()),
        "super" => {
            let up = p.iter().take_while(|s| *s == "super").count();
            let base = here.len().checked_sub(up)?;
            Some(here[..base].iter().chain(&p[up..]).cloned().collect())
        }
        _ => Some(here.into_iter().chain(p.iter().cloned()).collect()),
    }
}

/// An import of one file by another, and the path that makes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    path: String,
}

/// Which file imports which: a path names the file of the longest module
/// it starts with (`crate::queue::claimer::col` is `queue/claimer.rs`,
/// `super::*` the parent's `mod.rs`). Paths into the crate root and into
/// the file itself are not imports.
fn import_graph(files: &[(String, String)]) -> Vec<Edge> {
    let file_of: BTreeMap<Vec<String>, &str> = files
        .iter()
        .filter(|(f, _)| f != "main.rs")
        .map(|(f, _)| (module_of(f), f.as_str()))
        .collect();
    let mut edges = BTreeSet::new();
    for (from, text) in files.iter().filter(|(f, _)| f != "main.rs") {
        let m = module_of(from);
        for w in written_paths(text) {
            let Some(abs) = absolute(&m, &w) else {
                continue;
            };
            let Some(to) = (1..=abs.len())
                .rev()
                .find_map(|n| file_of.get(&abs[..n]).copied())
            else {
                continue;
            };
            if to != from {
                edges.insert(Edge {
                    from: from.clone(),
                    to: to.to_string(),
                    path: w.text(),
                });
            }
        }
    }
    edges.into_iter().collect()
}

/// The import cycles among `files` (path relative to `src/`, text): each
/// set of files that import one another (a strongly connected component of
/// more than one file), sorted, with the imports that close it.
fn cycles(files: &[(String, String)]) -> Vec<(Vec<String>, Vec<Edge>)> {
    let edges = import_graph(files);
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &edges {
        next.entry(&e.from).or_default().insert(&e.to);
    }
    // Tarjan's algorithm: components come out whole.
    struct Walk<'a> {
        next: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in self.next.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[w].min(self.low[v]);
                    self.low.insert(v, l);
                } else if self.on_stack.contains(w) {
                    let l = self.index[w].min(self.low[v]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut part = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    part.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if part.len() > 1 {
                    part.sort();
                    self.out.push(part);
                }
            }
        }
    }
    let mut walk = Walk {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for (f, _) in files {
        if !walk.index.contains_key(f.as_str()) {
            walk.visit(f);
        }
    }
    let mut found: Vec<(Vec<String>, Vec<Edge>)> = walk
        .out
        .into_iter()
        .map(|part| {
            let inside: Vec<Edge> = edges
                .iter()
                .filter(|e| part.contains(&e.from) && part.contains(&e.to))
                .cloned()
                .collect();
            (part, inside)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn no_import_points_up_a_layer() {
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    for (name, text) in source_files() {
        let m: Vec<&str> = name.trim_end_matches(".rs").split('/').collect();
        let top = m[0];
        if top == "lib" || top == "main" {
            continue;
        }
        let from = rank(LAYERS, top)
            .unwrap_or_else(|| panic!("src/{top} is in no layer: add it to LAYERS and to lib.rs"));
        for to in crate_imports(&text) {
            seen += 1;
            if to == top {
                continue;
            }
            let Some(r) = rank(LAYERS, &to) else {
                bad.entry(name.clone())
                    .or_default()
                    .push(format!("crate::{to} is in no layer"));
                continue;
            };
            if r >= from {
                bad.entry(name.clone())
                    .or_default()
                    .push(format!("imports crate::{to}, which is not below {top}"));
            }
        }
        if top == "admin" && m.len() > 1 && m[1] != "mod" {
            let file = m[1];
            let from = rank(ADMIN_LAYERS, file).unwrap_or_else(|| {
                panic!("src/admin/{file} is in no admin layer: add it to ADMIN_LAYERS")
            });
            // The admin file each path names: `crate::admin::x` from any
            // admin file, `super::x` from a file directly in admin/ (in
            // admin/ops/x.rs, `super::` is ops itself).
            let admin = ["admin".to_string()];
            for w in written_paths(&text) {
                let Some(abs) = absolute(&module_of(&name), &w) else {
                    continue;
                };
                if abs.len() < 2 || abs[0] != admin[0] {
                    continue;
                }
                let to = abs[1].as_str();
                if to == file {
                    continue;
                }
                if let Some(r) = rank(ADMIN_LAYERS, to) {
                    if r >= from {
                        bad.entry(name.clone()).or_default().push(format!(
                            "imports admin::{to}, which is not below admin::{file}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        seen > 100,
        "read only {seen} crate:: paths: is the scan broken?"
    );
    assert!(
        bad.is_empty(),
        "imports against the layer order (see src/lib.rs):\n{bad:#?}"
    );
}

#[test]
fn no_file_imports_one_that_imports_it() {
    let files = source_files();
    assert!(
        import_graph(&files).len() > 100,
        "found few imports between files: is the scan broken?"
    );
    let found = cycles(&files);
    let mut report = Vec::new();
    for (part, edges) in &found {
        let how: Vec<String> = edges
            .iter()
            .map(|e| format!("  {} → {} ({})", e.from, e.to, e.path))
            .collect();
        report.push(format!(
            "cycle between {}:\n{}",
            part.join(", "),
            how.join("\n")
        ));
    }
    assert!(
        report.is_empty(),
        "import cycles between files (put the shared piece in the lower file, or in a new file both import):\n{}",
        report.join("\n")
    );
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}

#[test]
fn the_scan_sees_grouped_and_plain_imports() {
    let text = "use crate::{db, queue::Claimed};\nuse crate::metrics;\nlet x = my_crate::a;";
    assert_eq!(crate_imports(text), ["db", "queue", "metrics"]);
    let paths = |src| -> Vec<String> { written_paths(src).iter().map(Written::text).collect() };
    assert_eq!(paths("use super::ops::{self};"), ["super::ops"]);
}

/// Groups inside groups are read whole, not cut at the first `}`.
#[test]
fn the_scan_reads_nested_groups() {
    let text = "use crate::{a::{b, c as d, e::{self, F}}, g::*, h};\nuse crate::i;";
    let paths: Vec<String> = written_paths(text).iter().map(Written::text).collect();
    assert_eq!(
        paths,
        [
            "crate::a::b",
            "crate::a::c",
            "crate::a::e",
            "crate::a::e::F",
            "crate::g::*",
            "crate::h",
            "crate::i"
        ]
    );
    assert_eq!(crate_imports(text), ["a", "a", "a", "a", "g", "h", "i"]);
}

/// Comments and literals hold no imports; code after them still does.
#[test]
fn the_scan_skips_comments_and_literals() {
    let text = r####"
        /// See `crate::admin::x` and /* crate::daemon */.
        const SQL: &str = "SELECT crate::y";
        const RAW: &str = r#"crate::z "quoted" "#;
        let c = '"'; let q = '\''; let l: &'static str = "\"crate::w";
        use crate::db;
    "####;
    assert_eq!(crate_imports(text), ["db"]);
}

/// Two files that import each other are a cycle, named with the imports
/// that close it; a chain that does not come back is not.
#[test]
fn a_planted_cycle_between_two_files_is_found() {
    let tree = files(&[
        ("lib.rs", "pub mod a;"),
        ("a/mod.rs", "pub mod x;\npub mod y;\npub mod z;"),
        ("a/x.rs", "use crate::{a::{y::Y, z}, b};\npub struct X;"),
        ("a/y.rs", "use super::x::X;\npub struct Y;"),
        ("a/z.rs", "pub struct Z;"),
    ]);
    let found = cycles(&tree);
    assert_eq!(found.len(), 1, "{found:#?}");
    let (part, edges) = &found[0];
    assert_eq!(part, &["a/x.rs", "a/y.rs"]);
    let how: Vec<(&str, &str, &str)> = edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.path.as_str()))
        .collect();
    assert_eq!(
        how,
        [
            ("a/x.rs", "a/y.rs", "crate::a::y::Y"),
            ("a/y.rs", "a/x.rs", "super::x::X")
        ]
    );
    let chain = files(&[
        ("a/mod.rs", "pub mod x;\npub mod y;"),
        ("a/x.rs", "use super::y::Y;"),
        ("a/y.rs", "pub struct Y;"),
    ]);
    assert!(cycles(&chain).is_empty());
}

/// A `mod.rs` that uses its children while a child imports `super::*` is a
/// cycle; a child's test module importing `super::*` (its own file) is not,
/// and neither is a `mod.rs` that only declares its children.
#[test]
fn a_glob_from_the_parent_is_an_import_of_the_parent_file() {
    let tree = files(&[
        (
            "ops/mod.rs",
            "mod a;\nmod b;\npub use a::*;\npub struct Shared;",
        ),
        ("ops/a.rs", "use super::*;\npub fn f(_: Shared) {}"),
        ("ops/b.rs", "use super::Shared;"),
    ]);
    let found = cycles(&tree);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, ["ops/a.rs", "ops/mod.rs"]);

    let tree = files(&[
        ("ops/mod.rs", "pub mod a;\npub struct Shared;"),
        (
            "ops/a.rs",
            "use super::*;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}",
        ),
    ]);
    assert!(cycles(&tree).is_empty(), "{:#?}", cycles(&tree));
}

/// A file's own child modules are read by their names alone (`source::f()`
/// in `triggers/mod.rs`), `super::super::` climbs two levels.
#[test]
fn child_paths_and_super_super_are_imports() {
    let tree = files(&[
        (
            "t/mod.rs",
            "pub mod s;\npub const D: i64 = 1;\nfn g() { s::f(); }",
        ),
        ("t/s/mod.rs", "pub mod k;\npub fn f() {}"),
        ("t/s/k.rs", "fn h() -> i64 { super::super::D }"),
    ]);
    let edges: Vec<(String, String)> = import_graph(&tree)
        .into_iter()
        .map(|e| (e.from, e.to))
        .collect();
    assert_eq!(
        edges,
        [
            ("t/mod.rs".to_string(), "t/s/mod.rs".to_string()),
            ("t/s/k.rs".to_string(), "t/mod.rs".to_string())
        ]
    );
}
