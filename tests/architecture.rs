//! Rules of the code's shape, checked on the source: the layering of `src/` (no module reaches up), every parse
//! of untrusted JSON going through `json::parse`, and every citation of the protocol notes pointing at a section
//! that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules of `src/` and their layer, lowest first. A module may use modules of a lower layer only
/// (and itself). Within the base layer the order is the listed one too, so no two modules import each other.
const LAYERS: &[(&str, u32)] = &[
    ("clock", 0),
    ("json", 0),
    ("log", 1),
    ("socket_id", 1),
    ("metrics", 1),
    ("config", 2),
    ("app", 3),
    ("http", 10),
    ("ws", 11),
    ("protocol", 20),
    ("channels", 30),
    ("webhooks", 35),
    ("cluster", 36),
    ("runtime", 40),
    ("api", 50),
    ("server", 60),
];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
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

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

/// Every `crate::x` a file names, with `use crate::{a, b}` groups expanded.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn no_module_reaches_up_a_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let own = rank(&module)
            .unwrap_or_else(|| panic!("{module} is not in LAYERS: place it in a layer"));
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_references(&text) {
            // Macros exported at the crate root (`crate::debug!`) come from `log`.
            let used = if matches!(used.as_str(), "info" | "warn" | "debug") {
                "log".to_string()
            } else {
                used
            };
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(r) if r < own => {}
                Some(_) => {
                    violations.push(format!("{} ({module}) uses crate::{used}", file.display()))
                }
                None => violations.push(format!(
                    "{} uses crate::{used}, which has no layer",
                    file.display()
                )),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_layer_check_catches_an_upward_use() {
    let refs = crate_references(
        "use crate::runtime::core::Core;\nuse crate::{json, http::query::Query};\n",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["http", "json", "runtime"]
    );
    assert!(
        rank("runtime").unwrap() > rank("protocol").unwrap(),
        "protocol may not use runtime"
    );
}

/// The part of a file before its unit tests (tests may parse our own output directly).
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn untrusted_json_is_parsed_only_through_the_depth_check() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = Vec::new();
    // json.rs is the door itself; tests.rs files are unit-test modules that read our own output.
    for file in files
        .iter()
        .filter(|f| !f.ends_with("json.rs") && !f.ends_with("tests.rs"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in without_tests(&text).lines().enumerate() {
            if [
                "sonic_rs::from_",
                "sonic_rs::to_array_iter",
                "sonic_rs::to_object_iter",
                "sonic_rs::get",
            ]
            .iter()
            .any(|p| line.contains(p))
            {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "parse JSON with json::parse, which bounds nesting first:\n{}",
        found.join("\n")
    );
}

/// Anchors of `docs/protocol.md`: GitHub's slugs of its headings and explicit `<a id>`s.
fn protocol_anchors() -> BTreeSet<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md"))
            .unwrap();
    let mut anchors = BTreeSet::new();
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix('#') {
            let title = h.trim_start_matches('#').trim();
            let slug: String = title
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
                    ' ' => Some('-'),
                    _ => None,
                })
                .collect();
            anchors.insert(slug);
        }
        let mut rest = line;
        while let Some(i) = rest.find("<a id=\"") {
            rest = &rest[i + 7..];
            if let Some(end) = rest.find('"') {
                anchors.insert(rest[..end].to_string());
            }
        }
    }
    anchors
}

#[test]
fn protocol_citations_point_at_existing_sections() {
    let anchors = protocol_anchors();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut missing = Vec::new();
    let mut cited = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains(concat!("spec ", "§")),
                "{}:{}: cite docs/protocol.md, not a document outside the repository",
                file.display(),
                n + 1
            );
            // A citation names one or more anchors: `#one`, `#one, #two`, `#one to #two`.
            for citation in line.split("docs/protocol.md").skip(1) {
                let mut tail = citation;
                while let Some(rest) = tail.strip_prefix('#') {
                    let anchor: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    cited += 1;
                    if !anchors.contains(&anchor) {
                        missing.push(format!("{}:{}: #{anchor}", file.display(), n + 1));
                    }
                    tail = &rest[anchor.len()..];
                    tail = tail
                        .strip_prefix(", ")
                        .or_else(|| tail.strip_prefix(" to "))
                        .unwrap_or("");
                }
            }
        }
    }
    assert!(
        cited > 20,
        "only {cited} citations found: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "no such section in docs/protocol.md:\n{}",
        missing.join("\n")
    );
}
