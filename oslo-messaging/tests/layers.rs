//! The layer rule of ARCHITECTURE.md, enforced: each top-level module of the library uses only
//! modules of a lower layer (so there is no module cycle), nothing outside `driver/rabbit/`
//! names the AMQP client crate, and nothing outside `driver/kafka/` names librdkafka.
//!
//! The check reads the sources: every `crate::<module>` path outside comments counts as a use,
//! and so do the crate-root re-exports (`crate::Error` is a use of `error`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and its layer, lowest first. A module may use modules of a lower
/// layer only. A new module must be placed here.
const LAYERS: &[(&str, u32)] = &[
    // Values everything shares.
    ("error", 0),
    ("secret", 0),
    ("version", 1),
    ("context", 1),
    // Pure logic: the wire format, options, URLs, targets (no I/O).
    ("target", 2),
    ("wire", 2),
    ("config", 2),
    ("serializer", 2),
    ("url", 2),
    // Counters and histograms through the `metrics` facade (no I/O of its own).
    ("stats", 2),
    // The private driver contract and the drivers; telemetry (spans, trace context), which
    // the runtime and the API call into.
    ("driver", 3),
    ("telemetry", 3),
    // The transport handle, and the server runtime shared by RPC servers and listeners.
    ("transport", 4),
    ("serve", 4),
    // The user API: RPC and notifications.
    ("rpc", 5),
    ("notify", 5),
    // The driver contract one level up, for the Python binding.
    ("driver_api", 6),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

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

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(name) => Some(name.to_owned()),
        None => Some(first),
    }
}

/// The code of a file without comments (doc links are not uses).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal (a URL) is rare in paths we look for; cut there.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Root re-exports: `pub use module::{A, B}` in lib.rs maps `crate::A` to `module`.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut map = BTreeMap::new();
    for stmt in code(&lib).split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items.trim_matches(|c| c == '{' || c == '}' || char::is_whitespace(c));
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// The identifiers that follow `crate::` (one, or each of a `crate::{a, b::c}` group).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `$crate::` in a macro names the crate too.
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.push(first_ident(&item));
        } else {
            out.push(first_ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn each_module_uses_only_lower_layers() {
    let layers: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let reexports = root_reexports();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut uses: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        modules.insert(module.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for name in crate_paths(&code(&text)) {
            let target = if layers.contains_key(name.as_str()) {
                name
            } else if let Some(m) = reexports.get(&name) {
                m.clone()
            } else {
                panic!(
                    "{}: `crate::{name}` is neither a module nor a root re-export",
                    file.display()
                );
            };
            if target != module {
                let rel = file.strip_prefix(src()).unwrap().display().to_string();
                uses.entry(module.clone())
                    .or_default()
                    .insert((target, rel));
            }
        }
    }
    for m in &modules {
        assert!(
            layers.contains_key(m.as_str()),
            "module `{m}` has no layer in tests/layers.rs (and ARCHITECTURE.md)"
        );
    }
    let mut wrong = Vec::new();
    for (module, targets) in &uses {
        for (target, file) in targets {
            if layers[target.as_str()] >= layers[module.as_str()] {
                wrong.push(format!(
                    "{file}: `{module}` (layer {}) uses `{target}` (layer {})",
                    layers[module.as_str()],
                    layers[target.as_str()]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways uses:\n{}",
        wrong.join("\n")
    );
}

/// The source files outside `driver/<driver>/` whose code names a crate by one of `paths`;
/// `driver/<driver>/mod.rs` must name it (so the guard reads real code).
fn named_outside(driver: &str, paths: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let home = src().join("driver").join(driver);
    let names_it = |text: &str| paths.iter().any(|p| text.contains(p));
    let mut named = Vec::new();
    for file in &files {
        let text = code(&std::fs::read_to_string(file).unwrap());
        if names_it(&text) && !file.starts_with(&home) {
            named.push(file.display().to_string());
        }
    }
    let driver = std::fs::read_to_string(home.join("mod.rs")).unwrap();
    assert!(
        names_it(&code(&driver)),
        "driver/{driver}/mod.rs names none of {paths:?}"
    );
    named
}

#[test]
fn only_the_rabbit_driver_names_the_amqp_client() {
    // A path into the crate, or an import of it (the group name "oslo_messaging_amqp" in a
    // string is not one).
    let named = named_outside(
        "rabbit",
        &[
            "oslo_messaging_amqp::",
            "oslo_messaging_amqp as ",
            "use oslo_messaging_amqp",
        ],
    );
    assert!(named.is_empty(), "the AMQP client is named in {named:?}");
}

#[test]
fn the_path_reader_sees_groups_and_macros() {
    let found = crate_paths("use crate::{wire::{self, Reply}, error::Error};\n$crate::config::x");
    assert_eq!(found, ["wire", "error", "config"]);
    assert_eq!(
        code("let a = 1; // crate::rpc\n/// crate::notify"),
        "let a = 1; \n"
    );
}

#[test]
fn only_the_kafka_driver_names_librdkafka() {
    let named = named_outside("kafka", &["rdkafka::", "use rdkafka"]);
    assert!(named.is_empty(), "the Kafka client is named in {named:?}");
}
