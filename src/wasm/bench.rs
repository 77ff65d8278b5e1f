//! Benchmark roles, compiled only with the `bench` feature (never in the shipped module):
//! - `persistence_bench` (`TableDriver`): `crate::table_bench` on Envoy's real shared data.
//! - `bench_noop` (`Noop`): a filter that does nothing: what every Wasm filter costs.
//! - `bench_copy` (`CopyHeader`): copies request header `x-bench-upstream` into the override header
//!   for stateful_session: the cheapest possible filter of this architecture.
//! - `bench_learn` (`Ceiling`): `bench_copy`, and on the response reads `upstream.address`, which
//!   every profile must (to count the outcome and re-pin a client whose server was replaced): the
//!   cheapest filter of this architecture that knows where its requests went.
//! - `bench_learn_cookie` (`Ceiling` setting a cookie): the same, and adds a Set-Cookie header as
//!   shaped like a real one: the cheapest first visit (minus sealing the token).

use super::envoy::{SharedData, UPSTREAM_ADDRESS};
use super::ffi::{self, Map};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

const ROLES: [&str; 5] = ["persistence_bench", "bench_noop", "bench_copy", "bench_learn", "bench_learn_cookie"];

/// The benchmark role a plugin's root id names, if any.
pub fn role(root_id: &[u8]) -> Option<&'static str> {
    ROLES.into_iter().find(|role| root_id == role.as_bytes())
}

pub fn context(role: &str) -> Box<dyn HttpContext> {
    match role {
        "bench_noop" => Box::new(Noop),
        "bench_copy" => Box::new(CopyHeader),
        "bench_learn" => Box::new(Ceiling { sets_cookie: false }),
        "bench_learn_cookie" => Box::new(Ceiling { sets_cookie: true }),
        _ => Box::new(TableDriver),
    }
}

pub struct TableDriver;

pub struct Noop;

impl Context for Noop {}
impl HttpContext for Noop {}

pub struct CopyHeader;

impl Context for CopyHeader {}

impl HttpContext for CopyHeader {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if let Ok(Some(value)) = ffi::header(Map::RequestHeaders, "x-bench-upstream") {
            let _ = ffi::replace_header(Map::RequestHeaders, crate::config::DEFAULT_OVERRIDE_HEADER, &value);
        }
        Action::Continue
    }
}

pub struct Ceiling {
    sets_cookie: bool,
}

/// Shaped like the first-visit cookie of the shipped http-cookie.yaml to an IPv4 backend (a 71
/// character token, 12 hours).
const FIRST_VISIT_COOKIE: &str =
    "AVI_COOKIE=AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; Path=/; Max-Age=43200; Expires=Sun, 22 Nov 2026 05:00:00 GMT; HttpOnly; SameSite=Lax";

impl Context for Ceiling {}

impl HttpContext for Ceiling {
    fn on_http_request_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
        CopyHeader.on_http_request_headers(headers, end_of_stream)
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let _ = ffi::property(&UPSTREAM_ADDRESS);
        if self.sets_cookie {
            let _ = ffi::add_header(Map::ResponseHeaders, "set-cookie", FIRST_VISIT_COOKIE.as_bytes());
        }
        Action::Continue
    }
}

impl Context for TableDriver {}

impl HttpContext for TableDriver {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = ffi::header(Map::RequestHeaders, ":path").ok().flatten().unwrap_or_default();
        let body = crate::table_bench::answer(&String::from_utf8_lossy(&path), &SharedData, ffi::now_seconds() as u32);
        let _ = ffi::send_response(200, &format!("{body}\n"));
        Action::Pause
    }
}

/// Time spent in named spans of the filter's callbacks, in this VM, flushed every 1024 spans to
/// counters `bench.span.<name>.ns` / `.count` (so the measurement barely costs host calls).
pub mod spans {
    use super::super::ffi::{self, MetricKind};
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Nanoseconds, calls, and the ids of the two counters once defined.
    type SpanTotal = (u64, u64, Option<(u32, u32)>);

    #[derive(Default)]
    struct Totals {
        spans: HashMap<&'static str, SpanTotal>,
        pending: u32,
    }

    thread_local!(static TOTALS: RefCell<Totals> = RefCell::default());

    fn nanos() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    }

    pub fn span<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
        let start = nanos();
        let result = f();
        let elapsed = nanos().saturating_sub(start);
        TOTALS.with(|totals| {
            let mut totals = totals.borrow_mut();
            let entry = totals.spans.entry(name).or_default();
            entry.0 += elapsed;
            entry.1 += 1;
            totals.pending += 1;
            if totals.pending >= 1024 {
                totals.pending = 0;
                for (name, (ns, count, ids)) in totals.spans.iter_mut() {
                    let ids = *ids.get_or_insert_with(|| {
                        let ns = ffi::define_metric(MetricKind::Counter, &format!("bench.span.{name}.ns")).unwrap_or(0);
                        let count = ffi::define_metric(MetricKind::Counter, &format!("bench.span.{name}.count")).unwrap_or(0);
                        (ns, count)
                    });
                    let _ = ffi::increment_metric(ids.0, *ns as i64);
                    let _ = ffi::increment_metric(ids.1, *count as i64);
                    *ns = 0;
                    *count = 0;
                }
            }
        });
        result
    }
}
