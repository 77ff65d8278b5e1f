//! The demo, seen by a real browser: headless Chromium opens the demo (envoy/http-cookie.yaml with
//! three backends), gets the persistence cookie, keeps it, and stays on one backend across reloads.
//! Leaves a screenshot in target/demo-screenshot.png (not committed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::browser::Browser;
use common::{Backend, Envoy, EnvoyConfig};
use std::collections::HashSet;

#[test]
fn a_browser_keeps_the_cookie_and_stays_on_one_backend() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks());
    let url = format!("http://{}/", envoy.addr());
    let mut browser = Browser::start();
    browser.open(&url);
    let backend_shown = |browser: &mut Browser| browser.script("return document.getElementById('backend').textContent").as_str().unwrap().to_string();
    let first = backend_shown(&mut browser);
    let decision = browser.script("return document.getElementById('decision').textContent");
    assert_eq!(decision.as_str().unwrap(), "profile=web type=http_cookie decision=balance", "a first visit is load balanced");
    let cookies = browser.cookies();
    let ours = cookies.iter().find(|c| c["name"] == "AVI_COOKIE").unwrap_or_else(|| panic!("no AVI_COOKIE in {cookies:?}"));
    assert_eq!(ours["httpOnly"], true);
    assert!(browser.script("return document.cookie").as_str().unwrap().is_empty(), "HttpOnly: invisible to scripts");
    let mut seen = HashSet::new();
    for _ in 0..6 {
        browser.reload();
        seen.insert(backend_shown(&mut browser));
    }
    assert_eq!(seen, HashSet::from([first.clone()]), "every reload on the first backend");
    let decision = browser.script("return document.getElementById('decision').textContent");
    let server = backends.iter().find(|b| b.name == first).unwrap().addr;
    assert_eq!(decision.as_str().unwrap(), format!("profile=web type=http_cookie decision=pin server={server}"));
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = common::envoy::repo_root().join("target/demo-screenshot.png");
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());
    // Only the very first request was balanced; the reloads (and the browser's favicon requests)
    // all carried the cookie.
    assert_eq!(envoy.counter("persistence.web.new"), 1);
    assert!(envoy.counter("persistence.web.pinned") >= 6);
}
