//! README.md is the reference operators read: every configuration field the code accepts and every
//! stat it defines must be documented there. The field lists come from the code itself (the
//! configuration reader's "known fields" message), so a new field without documentation fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use envoy_persistence::config::Config;
use envoy_persistence::metrics::{entries_stat, profile_stat, FilterCounter, ProfileCounter, CONNECTION_CONFLICTS, TRACKED_CLIENTS};
use envoy_persistence::profile::TYPES;
use serde_json::{json, Value};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The README text from heading `title` to the next heading of the same or a higher level.
fn section(readme: &str, title: &str) -> String {
    let start = readme.find(title).unwrap_or_else(|| panic!("README has no section {title}"));
    let level = title.chars().take_while(|c| *c == '#').count();
    let rest = &readme[start + title.len()..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|i| {
            let hashes = rest[*i..].chars().take_while(|c| *c == '#').count();
            (1..=level).contains(&hashes) && rest[*i..].chars().nth(hashes) == Some(' ')
        })
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The fields the code knows in the object holding `"zz_unknown"` (from the rejection message).
fn known_fields(config: Value) -> Vec<String> {
    let errors = Config::parse(config.to_string().as_bytes()).expect_err("rejected");
    let message = errors.iter().map(ToString::to_string).find(|e| e.contains("zz_unknown")).unwrap_or_else(|| panic!("{errors:?}"));
    let list = message.split("known fields here: ").nth(1).unwrap().trim_end_matches(')');
    list.split(", ").map(str::to_string).collect()
}

fn profile_with(type_name: &str, section: Value) -> Value {
    json!({"profiles": [{"name": "p", "type": type_name, type_name: section}]})
}

#[test]
fn every_configuration_field_is_documented() {
    let readme = readme();
    let mut sections: Vec<(String, Vec<String>)> = vec![
        ("### Top level".into(), known_fields(json!({"zz_unknown": 1}))),
        ("### Profiles".into(), {
            let mut fields = known_fields(json!({"profiles": [{"name": "p", "type": "client_ip", "zz_unknown": 1}]}));
            fields.retain(|f| !TYPES.contains(&f.as_str()));
            fields.push(TYPES.join("`, `"));
            fields
        }),
    ];
    // A settings section of every type (both modes where there are two); a new type fails here
    // until it has a sample, and then until README documents its fields.
    let samples = [
        ("http_cookie", json!({"zz_unknown": 1})),
        ("client_ip", json!({"zz_unknown": 1})),
        ("tls", json!({"zz_unknown": 1})),
        ("http_header", json!({"name": "x", "servers": [{"address": "10.0.0.1:80", "values": ["a"]}], "zz_unknown": 1})),
        ("app_cookie", json!({"name": "J", "mode": "table", "zz_unknown": 1})),
        ("app_cookie", json!({"name": "J", "mode": "prefix", "zz_unknown": 1})),
        ("session_header", json!({"zz_unknown": 1})),
        ("app_header", json!({"name": "x", "mode": "table", "zz_unknown": 1})),
        ("app_header", json!({"name": "x", "mode": "prefix", "zz_unknown": 1})),
    ];
    let untested: Vec<&&str> = TYPES.iter().filter(|t| !samples.iter().any(|(s, _)| s == *t)).collect();
    assert!(untested.is_empty(), "profile types without a documentation sample here: {untested:?}");
    for (type_name, sample) in samples {
        sections.push((format!("### `{type_name}`"), known_fields(profile_with(type_name, sample))));
    }
    let mut missing = Vec::new();
    for (title, fields) in &sections {
        let text = section(&readme, title);
        for field in fields {
            if !text.contains(&format!("| `{field}` |")) {
                missing.push(format!("{title}: `{field}`"));
            }
        }
    }
    // Fields of list items, described in their parent's row.
    let keys = known_fields(json!({"keys": [{"id": 1, "secret": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "zz_unknown": 1}]}));
    let servers = known_fields(profile_with("http_header", json!({"name": "x", "servers": [{"address": "10.0.0.1:80", "values": ["a"], "zz_unknown": 1}]})));
    for (title, fields) in [("### Top level", keys), ("### `http_header`", servers)] {
        let text = section(&readme, title);
        missing.extend(fields.iter().filter(|f| !text.contains(&format!("\"{f}\""))).map(|f| format!("{title}: \"{f}\"")));
    }
    assert!(missing.is_empty(), "undocumented configuration fields: {missing:#?}");
}

#[test]
fn every_stat_is_documented() {
    let stats = section(&readme(), "## Stats");
    let mut names: Vec<String> = ProfileCounter::ALL.iter().map(|c| profile_stat("<profile>", *c)).collect();
    names.extend(FilterCounter::ALL.iter().map(|c| c.name().to_string()));
    names.push(entries_stat("<profile>"));
    names.extend([TRACKED_CLIENTS.to_string(), CONNECTION_CONFLICTS.to_string()]);
    let missing: Vec<&String> = names.iter().filter(|n| !stats.contains(&format!("| `{n}`"))).collect();
    assert!(missing.is_empty(), "undocumented stats: {missing:?}");
}

#[test]
fn the_doc_checks_can_fail() {
    assert!(!section("## A\n| `x` | y |\n## B\n", "## A").contains("`z`"));
    assert_eq!(section("## A\ntext\n### sub\nmore\n## B\nother", "## A"), "\ntext\n### sub\nmore\n");
    assert!(known_fields(json!({"zz_unknown": 1})).contains(&"profiles".to_string()));
}
