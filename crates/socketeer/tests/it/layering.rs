//! The library's modules depend on each other without cycles: each can be read, and changed,
//! knowing only the ones below it. Read from the source (`src/`), test code left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module -> the modules its code names (`crate::m`, `crate::{a, b::c}`, or a type the crate
/// root re-exports, `crate::Error`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).expect("dir") {
                files.push(inner.expect("entry").path());
            }
        } else {
            files.push(path);
        }
    }
    let module_of = |path: &Path| -> String {
        let rel = path.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    // `pub use module::{Type, ..}` in lib.rs: which module a root name comes from.
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let mut root = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub use ")) {
        if let Some((module, names)) = line.split_once("::") {
            for name in names.split(|c: char| !c.is_alphanumeric() && c != '_') {
                if name.starts_with(char::is_uppercase) {
                    root.insert(name.to_owned(), module.to_owned());
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let me = module_of(file);
        let text = std::fs::read_to_string(file).expect("source");
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let deps = graph.entry(me.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let named: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .collect(),
                    None => vec![
                        rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                            .next()
                            .unwrap_or_default(),
                    ],
                };
                for name in named {
                    let module = if modules.contains(name) {
                        Some(name.to_owned())
                    } else {
                        root.get(name).cloned()
                    };
                    if let Some(module) = module.filter(|m| *m != me) {
                        deps.insert(module);
                    }
                }
            }
        }
    }
    graph
}

/// A path from `from` back to `to`, if there is one.
fn path(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in graph.get(from).into_iter().flatten() {
        if next == to {
            return Some(vec![next.clone()]);
        }
        if seen.insert(next.clone()) {
            if let Some(mut rest) = path(graph, next, to, seen) {
                rest.insert(0, next.clone());
                return Some(rest);
            }
        }
    }
    None
}

#[test]
fn the_modules_depend_on_each_other_without_cycles() {
    let graph = graph();
    assert!(graph.len() > 15, "the source was read: {graph:?}");
    assert!(
        graph["server"].contains("gate") && graph["connection"].contains("codec"),
        "dependencies were found: {graph:?}"
    );
    for module in graph.keys() {
        if let Some(cycle) = path(&graph, module, module, &mut BTreeSet::new()) {
            panic!("a cycle: {module} -> {}", cycle.join(" -> "));
        }
    }
}
