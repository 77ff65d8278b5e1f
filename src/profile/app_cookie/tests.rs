use super::*;
use crate::config_reader::parse_section;
use crate::keyring::Keyring;
use crate::endpoint;
use serde_json::json;

fn server(n: u8) -> Server {
    Server::host(endpoint::parse(&format!("10.0.0.{n}:8080")).unwrap())
}

fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
    parse_section("app_cookie", &section, |field, errors| Settings::parse(field, errors, "app_cookie"))
}

#[test]
fn reads_settings() {
    let table = parse(json!({"name": "JSESSIONID"})).unwrap();
    assert_eq!((table.mode, table.timeout, table.max_entries), (Mode::Table, 1200, 1 << 21));
    assert_eq!(parse(json!({"name": "J", "timeout_minutes": 5, "max_entries": 10})).unwrap().timeout, 300);
    let prefix = parse(json!({"name": "J", "mode": "prefix", "path": "/app"})).unwrap();
    assert_eq!((prefix.mode, prefix.path.as_str()), (Mode::Prefix, "/app"));
}

#[test]
fn rejects_bad_settings() {
    let cases = [
        (json!({}), "app_cookie.name: is required (the application's session cookie, e.g. JSESSIONID)"),
        (
            json!({"name": "J", "mode": "prefix", "timeout_minutes": 20}),
            "app_cookie.timeout_minutes: has no effect in prefix mode: the persistence lives in the application's cookie, as long as it does",
        ),
        (json!({"name": "J", "path": "/"}), "app_cookie.path: is for prefix mode only (the Path of a cookie the filter re-issues)"),
        (json!({"name": "J", "mode": "cookie"}), "app_cookie.mode: must be one of \"table\", \"prefix\", got string \"cookie\""),
        (json!({"name": "J", "timeout_minutes": 0}), "app_cookie.timeout_minutes: must be an integer between 1 and 720, got number 0"),
    ];
    for (section, expected) in cases {
        assert_eq!(parse(section.clone()), Err(vec![expected.to_string()]), "{section}");
    }
    let mut errors = Errors::default();
    assert!(Settings::parse(None, &mut errors, "profiles[0].app_cookie").is_none());
    assert_eq!(errors.0[0].to_string(), "profiles[0].app_cookie: is required (at least the application's cookie name, e.g. {\"name\": \"JSESSIONID\"})");
}

#[test]
fn finds_the_session_id_in_cookie_query_or_path_parameter() {
    let cookies = vec![b"a=1; JSESSIONID=C00KIE".to_vec()];
    let found =
        |cookies: &[Vec<u8>], path: &'static str| session_id("JSESSIONID", cookies, path.as_bytes()).map(|(v, f)| (String::from_utf8(v.to_vec()).unwrap(), f));
    assert_eq!(found(&cookies, "/x?JSESSIONID=Q"), Some(("C00KIE".into(), Found::Cookie)), "the cookie wins");
    assert_eq!(found(&[], "/x?a=1&JSESSIONID=QUERY&b=2"), Some(("QUERY".into(), Found::Query)));
    assert_eq!(found(&[], "/shop/cart;jsessionid=PATH?a=1"), Some(("PATH".into(), Found::PathParameter)));
    assert_eq!(found(&[], "/shop;jsessionid=SEG/cart"), Some(("SEG".into(), Found::PathParameter)));
    assert_eq!(found(&[], "/x;v=1;JSESSIONID=P2"), Some(("P2".into(), Found::PathParameter)));
    assert_eq!(found(&[], "/x?q=1#JSESSIONID=frag"), None);
    assert_eq!(found(&[], "/x?JSESSIONID=&y=1"), None, "empty values are no session");
    assert_eq!(found(&[], "/x?XJSESSIONID=1"), None);
    assert_eq!(found(&[], "/jsessionid=x"), None, "not a parameter");
    assert_eq!(found(&[b"JSESSIONID=".to_vec()], "/?JSESSIONID=Q"), Some(("Q".into(), Found::Query)));
}

#[test]
fn reads_what_the_backend_issued() {
    let headers = vec![b"other=1".to_vec(), b"JSESSIONID=OLD; Path=/".to_vec(), b"JSESSIONID=NEW; Path=/; HttpOnly".to_vec()];
    assert_eq!(issued("JSESSIONID", &headers), Some(Issued::Value(b"NEW".to_vec())), "the last one wins");
    assert_eq!(issued("JSESSIONID", &[b"JSESSIONID=; Max-Age=0".to_vec()]), Some(Issued::Deleted));
    assert_eq!(issued("JSESSIONID", &[b"jsessionid=x".to_vec()]), None, "cookie names are case-sensitive");
}

/// The response of a table-mode request: its outcome (the rule of every table-backed type) and its writes.
fn decide_table(key: Option<u64>, pin: Option<Entry<Server>>, upstream: Option<Server>, issued: Option<Issued>, mode: ServerDown, timeout: u32, now: u32) -> (Outcome, Vec<(u64, Write)>) {
    let (outcome, write) = table_backed::decide(pin, upstream, mode, timeout, now);
    let pinned_there = upstream.is_some() && pin.map(|p| p.record) == upstream;
    (outcome, table_writes(key, write, upstream, issued, now, pinned_there))
}

#[test]
fn table_mode_learns_issued_ids_and_moves_with_session_changes() {
    let (k_old, k_new) = (key(b"OLD"), key(b"NEW"));
    // First visit: no id, the backend issues one.
    let (outcome, writes) = decide_table(None, None, Some(server(1)), Some(Issued::Value(b"NEW".to_vec())), ServerDown::Immediate, 60, 1000);
    assert_eq!(outcome, Outcome::New);
    assert_eq!(writes, vec![(k_new, Write::Learn(Entry { touched: 1000, record: server(1) }))]);
    // Login rotates the id: the new id is recorded, the old one forgotten.
    let pin = Some(Entry { touched: 990, record: server(1) });
    let (outcome, writes) = decide_table(Some(k_old), pin, Some(server(1)), Some(Issued::Value(b"NEW".to_vec())), ServerDown::Immediate, 60, 1000);
    assert_eq!(outcome, Outcome::Pinned);
    assert_eq!(writes, vec![(k_new, Write::Learn(Entry { touched: 1000, record: server(1) })), (k_old, Write::Forget)]);
    // Logout deletes it.
    let (_, writes) = decide_table(Some(k_old), pin, Some(server(1)), Some(Issued::Deleted), ServerDown::Immediate, 60, 1000);
    assert_eq!(writes, vec![(k_old, Write::Forget)]);
    // An unknown id without Set-Cookie: learned from the server that served it.
    let (outcome, writes) = decide_table(Some(k_old), None, Some(server(2)), None, ServerDown::Immediate, 60, 1000);
    assert_eq!(outcome, Outcome::New);
    assert_eq!(writes, vec![(k_old, Write::InsertIfAbsent(Entry { touched: 1000, record: server(2) }))]);
    // The backend repeats the request's id on the server it is pinned to: no news, no write.
    let pinned = Some(Entry { touched: 999, record: server(1) });
    let (outcome, writes) = decide_table(Some(k_old), pinned, Some(server(1)), Some(Issued::Value(b"OLD".to_vec())), ServerDown::Immediate, 60, 1000);
    assert_eq!((outcome, writes), (Outcome::Pinned, vec![]));
    // ... but after a move it is learned for the new server.
    let (outcome, writes) = decide_table(Some(k_old), pinned, Some(server(2)), Some(Issued::Value(b"OLD".to_vec())), ServerDown::Immediate, 60, 1000);
    assert_eq!((outcome, writes), (Outcome::Repicked, vec![(k_old, Write::Learn(Entry { touched: 1000, record: server(2) }))]));
    // No id at all and nothing issued: nothing to record.
    assert_eq!(decide_table(None, None, Some(server(2)), None, ServerDown::Immediate, 60, 1000), (Outcome::New, vec![]));
}

#[test]
fn prefix_mode_seals_and_strips_so_the_backend_sees_its_own_value() {
    let keys = Tokens::new(Keyring::new(&[(1, [1; 32])], 1).unwrap());
    let sealed = seal_set_cookie("JSESSIONID", &keys, b"JSESSIONID=AB12.node1; Path=/app; HttpOnly", server(3), 1000, [4; 12]).unwrap();
    let sealed = String::from_utf8(sealed).unwrap();
    assert!(sealed.ends_with(".AB12.node1; Path=/app; HttpOnly"), "{sealed}");
    let client_value = sealed.split(';').next().unwrap().to_string();
    let header = format!("x=1; {client_value}; y=2").into_bytes();
    let (found, rewritten) = read_prefixed("JSESSIONID", &keys, &[header]);
    let Prefixed::Valid { claims, value, .. } = found else { panic!("{found:?}") };
    assert_eq!((claims.server, value.as_slice()), (server(3), &b"AB12.node1"[..]));
    assert_eq!(rewritten, vec![Some(b"x=1; JSESSIONID=AB12.node1; y=2".to_vec())]);
    // Deletions and other cookies are not sealed.
    assert_eq!(seal_set_cookie("JSESSIONID", &keys, b"JSESSIONID=; Max-Age=0", server(3), 1000, [4; 12]), None);
    assert_eq!(seal_set_cookie("JSESSIONID", &keys, b"OTHER=1", server(3), 1000, [4; 12]), None);
}

#[test]
fn prefix_mode_leaves_application_values_alone_and_reports_bad_tokens() {
    let keys = Tokens::new(Keyring::new(&[(1, [1; 32])], 1).unwrap());
    let (found, rewritten) = read_prefixed("JSESSIONID", &keys, &[b"JSESSIONID=AB12.node1".to_vec()]);
    assert_eq!((found, rewritten), (Prefixed::Absent, vec![None]), "a Tomcat jvmRoute is not a token");
    let other = Tokens::new(Keyring::new(&[(1, [2; 32])], 1).unwrap());
    let sealed = seal_set_cookie("JSESSIONID", &other, b"JSESSIONID=V", server(1), 1000, [4; 12]).unwrap();
    let (found, rewritten) = read_prefixed("JSESSIONID", &keys, &[sealed]);
    assert_eq!(found, Prefixed::Rejected(OpenError::Forged));
    assert_eq!(rewritten, vec![Some(b"JSESSIONID=V".to_vec())], "stripped anyway: the backend gets its value");
    let renamed = seal_set_cookie("SESSION", &keys, b"SESSION=V", server(1), 1000, [4; 12]).unwrap();
    let renamed = String::from_utf8(renamed).unwrap().replace("SESSION=", "JSESSIONID=");
    assert_eq!(read_prefixed("JSESSIONID", &keys, &[renamed.into_bytes()]).0, Prefixed::Rejected(OpenError::Forged));
}
