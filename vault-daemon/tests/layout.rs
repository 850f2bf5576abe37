//! The daemon's shape, checked so it stays as ARCHITECTURE.md draws it: no import cycle
//! between the crate's top-level modules (each `crate::<module>` a file names is an edge), and
//! no source file of the library crates past ~800 lines (split by job instead).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules of `src` and the other top-level modules each one names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(src).unwrap();
        let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
        let name = first.trim_end_matches(".rs").to_owned();
        (name != "lib" && name != "main" && name != "bin").then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|p| top(p)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = top(f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let edges = graph.entry(from.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != from && modules.contains(&name) {
                    edges.insert(name.clone());
                }
                if name.is_empty() && rest.starts_with('{') {
                    let inner = rest[1..].split('}').next().unwrap_or_default();
                    for part in inner.split(',') {
                        let name = part.trim().split("::").next().unwrap_or_default().trim();
                        if name != from && modules.contains(name) {
                            edges.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    graph
}

/// A module that reaches itself through the graph, with the path.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = walk(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|k| walk(graph, k, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycle_between_the_daemons_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(graph.contains_key("request") && graph.contains_key("grpc"));
    assert!(graph["grpc"].contains("request"), "{graph:?}");
    if let Some(c) = cycle(&graph) {
        panic!("import cycle: {}", c.join(" → "));
    }
}

#[test]
fn the_request_path_names_no_transport() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("request"), &mut files);
    rust_files(&src.join("rpc"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for word in ["tonic", "hyper", "http::"] {
            assert!(
                !text
                    .lines()
                    .any(|l| !l.trim_start().starts_with("//") && l.contains(word)),
                "{} names {word}",
                f.display()
            );
        }
    }
}

#[test]
fn no_library_source_file_past_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in ["vault-core/src", "vault-daemon/src", "vault-client/src"] {
        rust_files(&root.join(krate), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            // ~800: a file a little past it is not worth a split for its own sake.
            (n > 850).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split by job: {long:?}");
}
