//! The house rules, read from the source: every import runs down the flow of
//! data (raw arguments → resolved settings → clients and cluster facts → the
//! component trait → shared lookups → the components → the deployment list →
//! the commands → main), so the module graph has no circle; and no component
//! imports another (what several share lives in `lookups`, or in the shared
//! pieces of `components/mod.rs`, `owned_secret.rs` and `ingress_teardown.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer order, lowest first: a module may import only modules before it.
const ORDER: &[&str] = &[
    // inputs and vocabulary: no cluster, no clients
    "error",
    "pins",
    "redaction",
    "cleanup",
    "process",
    "inputs",
    "cli",
    "completion",
    "properties",
    "schema",
    "policy",
    "ownership",
    // resolved settings, clients and what they need
    "spec",
    "support",
    "tls",
    "http",
    "credentials",
    "helm",
    "releases",
    "record",
    "lease",
    "transport",
    "context",
    "identity",
    "values",
    "wait",
    // what every component gets, and the reads several share
    "component",
    "lookups",
    // the components, their order, and what runs them
    "components",
    "deployment",
    "output",
    "commands",
    "main",
];

/// Shared pieces of `components/` that components may import.
const SHARED: &[&str] = &["owned_secret", "ingress_teardown"];

fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim_start).filter(|l| !l.starts_with("//"))
}

/// `crate::NAME` paths a file uses, anywhere in its code (not only `use` lines).
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in code_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let name: String = rest[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = &rest[i + 7..];
        }
        // `use crate::{a, b}` groups
        if let Some(group) = line.strip_prefix("use crate::{") {
            for part in group.split([',', '}']) {
                let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// Every source file under src/, with the top-level module it belongs to.
fn modules(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            modules(&path, Some(top.unwrap_or(&stem)), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = top.map(str::to_string).unwrap_or_else(|| stem.clone());
            out.push((module, path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn every_import_runs_down_the_layers_so_there_is_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    modules(&src, None, &mut files);
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut wrong = vec![];
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path, text) in &files {
        let Some(&mine) = rank.get(module.as_str()) else {
            wrong.push(format!("{path}: module {module} has no place in ORDER"));
            continue;
        };
        for import in crate_imports(text) {
            if import == *module {
                continue;
            }
            graph.entry(module.clone()).or_default().insert(import.clone());
            match rank.get(import.as_str()) {
                Some(&theirs) if theirs < mine => {}
                Some(_) => wrong.push(format!("{path}: {module} imports {import}, a layer above or beside it")),
                None => wrong.push(format!("{path}: imports crate::{import}, which is not in ORDER")),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the flow of data:\n{}", wrong.join("\n"));
    // What the layering implies, checked on its own: a topological order exists.
    let mut left = graph.clone();
    while !left.is_empty() {
        let free: Vec<String> =
            left.keys().filter(|m| left[*m].iter().all(|d| !left.contains_key(d))).cloned().collect();
        assert!(!free.is_empty(), "an import circle among {:?}", left.keys().collect::<Vec<_>>());
        for m in free {
            left.remove(&m);
        }
    }
}

#[test]
fn no_component_imports_another() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/components");
    let mut files = vec![];
    modules(&dir, None, &mut files);
    let components: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).filter(|m| m != "mod").collect();
    let mut wrong = vec![];
    for (module, path, text) in &files {
        // How many `super::` lead from this file to `components/`.
        let nested = path.contains(&format!("components/{module}/")) && !path.ends_with("/mod.rs");
        let to_components = if nested { 2 } else { 1 };
        for line in code_lines(text) {
            let mut rest = line;
            while let Some(i) = rest.find("super::") {
                let mut after = &rest[i..];
                let mut depth = 0;
                while let Some(r) = after.strip_prefix("super::") {
                    depth += 1;
                    after = r;
                }
                let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if depth == to_components
                    && components.contains(&name)
                    && name != *module
                    && !SHARED.contains(&name.as_str())
                {
                    wrong.push(format!("{path}: {module} imports the component {name}"));
                }
                rest = &rest[i + 7 * depth..];
            }
            if let Some(i) = line.find("crate::components::") {
                wrong.push(format!("{path}: {module} reaches into components through {}", &line[i..]));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
