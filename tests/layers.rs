//! The house follows the data: each module of `src/` may import only from the
//! layers below it (the order `src/lib.rs` documents), and the admin's files
//! only from the files below them. This test reads every `crate::` path in
//! the source and fails on an import that points up, naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom first. Modules on one line are one layer and may not import each
/// other. Must match the order `src/lib.rs` documents.
const LAYERS: &[&[&str]] = &[
    &["metrics", "logging"],
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
    &["error"],
    &["inputs"],
    &["access"],
    &["auth", "test_slots", "test_sender", "plausible_session", "portal"],
    &["core"],
    &["ops"],
    &["state"],
    &["api", "metrics", "cli"],
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

/// The first path segment after each `crate::` (and each name inside a
/// `crate::{a, b}` group).
fn crate_imports(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices("crate::") {
        if i > 0 {
            let before = src.as_bytes()[i - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue; // e.g. `my_crate::`
            }
        }
        let rest = &src[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

/// The admin file a `super::x` in an admin file names.
fn super_imports(src: &str) -> Vec<String> {
    src.match_indices("super::")
        .map(|(i, _)| {
            src[i + "super::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The admin file each `crate::admin::x` names.
fn admin_paths(src: &str) -> Vec<String> {
    src.match_indices("crate::admin::")
        .map(|(i, _)| {
            src[i + "crate::admin::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn module_of(root: &Path, file: &Path) -> Vec<String> {
    file.strip_prefix(root)
        .unwrap()
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn no_import_points_up_a_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    for f in &files {
        let m = module_of(&root, f);
        let top = m[0].as_str();
        if top == "lib" || top == "main" {
            continue;
        }
        let from = rank(LAYERS, top)
            .unwrap_or_else(|| panic!("src/{top} is in no layer: add it to LAYERS and to lib.rs"));
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.strip_prefix(&root).unwrap().display().to_string();
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
            let file = m[1].as_str();
            let from = rank(ADMIN_LAYERS, file).unwrap_or_else(|| {
                panic!("src/admin/{file} is in no admin layer: add it to ADMIN_LAYERS")
            });
            // Files inside a folder (admin/ops/x.rs) reach their siblings
            // through `super::`; only a file directly in admin/ names another
            // admin file that way. Any admin file may name one by its path.
            let mut names = admin_paths(&text);
            if m.len() == 2 {
                names.extend(super_imports(&text));
            }
            {
                for to in names {
                    if to == file {
                        continue;
                    }
                    if let Some(r) = rank(ADMIN_LAYERS, &to) {
                        if r >= from {
                            bad.entry(name.clone()).or_default().push(format!(
                                "imports admin::{to}, which is not below admin::{file}"
                            ));
                        }
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
fn the_scan_sees_grouped_and_plain_imports() {
    let text = "use crate::{db, queue::Claimed};\nuse crate::metrics;\nlet x = my_crate::a;";
    assert_eq!(crate_imports(text), ["db", "queue", "metrics"]);
    assert_eq!(super_imports("use super::ops::{self};"), ["ops"]);
}
