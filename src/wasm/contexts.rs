//! The SDK contexts. The module has two roles, chosen by the plugin's `root_id`:
//! - the HTTP filter (any root id but `persistence_connections`): one `Plugin` per configuration,
//!   a `flow::Stream` per request, housekeeping on every tick;
//! - `persistence_connections`, the network filter: counts each client's open connections for
//!   client IP persistence (`crate::connections`). It needs no configuration.

use super::envoy::Envoy;
use super::ffi;
use crate::connections::{ConnectionCounter, Counted};
use crate::flow::Stream;
use crate::housekeeping;
use crate::metrics::{FilterCounter, Metrics};
use crate::plugin::Plugin;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, PeerType};
use std::net::SocketAddr;
use std::rc::Rc;

pub const CONNECTIONS_ROOT_ID: &str = "persistence_connections";

enum Role {
    Unconfigured,
    #[cfg(feature = "bench")]
    Bench(&'static str),
    Http(Rc<Plugin>),
    Connections(Rc<ConnectionCounter>),
}

pub struct Root {
    role: Role,
}

impl Default for Root {
    fn default() -> Root {
        Root { role: Role::Unconfigured }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        super::adopt_envoy_log_level();
        let root_id = ffi::property(&["plugin_root_id"]).ok().flatten().unwrap_or_default();
        #[cfg(feature = "bench")]
        if let Some(role) = super::bench::role(&root_id) {
            self.role = Role::Bench(role);
            return true;
        }
        if root_id == CONNECTIONS_ROOT_ID.as_bytes() {
            if size > 0 {
                log::info!("{CONNECTIONS_ROOT_ID}: counts client connections for client IP persistence; it takes no configuration (ignored)");
            }
            self.role = Role::Connections(Rc::new(ConnectionCounter::new(&Envoy)));
            let _ = ffi::set_tick_period(housekeeping::PERIOD);
            return true;
        }
        let text = match ffi::plugin_configuration(size) {
            Ok(text) => text,
            Err(status) => {
                log::error!("cannot read the plugin configuration (status {}); plugin rejected", status.0);
                Metrics::filter_only(&Envoy).count(&Envoy, FilterCounter::ConfigErrors);
                return false;
            }
        };
        let Some(plugin) = Plugin::configure(&text, &Envoy) else { return false };
        if housekeeping::has_tables(&plugin) {
            let _ = ffi::set_tick_period(housekeeping::PERIOD);
        }
        self.role = Role::Http(Rc::new(plugin));
        true
    }

    fn on_tick(&mut self) {
        match &self.role {
            Role::Http(plugin) => housekeeping::sweep(plugin, &Envoy),
            Role::Connections(counter) => counter.sweep(&Envoy, housekeeping::BUCKETS_PER_TICK),
            _ => {}
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        match self.role {
            Role::Connections(_) => Some(ContextType::StreamContext),
            _ => Some(ContextType::HttpContext),
        }
    }

    // Never None: the SDK panics on None.
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        #[cfg(feature = "bench")]
        if let Role::Bench(role) = self.role {
            return Some(super::bench::context(role));
        }
        // Without a valid configuration (Envoy should have rejected the plugin) the stream still
        // removes client-supplied override headers.
        let plugin = match &self.role {
            Role::Http(plugin) => Some(plugin.clone()),
            _ => None,
        };
        Some(Box::new(HttpFilter { stream: Stream::new(plugin) }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        let counter = match &self.role {
            Role::Connections(counter) => Some(counter.clone()),
            _ => None,
        };
        Some(Box::new(ConnectionFilter { counter, counted: None }))
    }
}

/// One HTTP stream.
struct HttpFilter {
    stream: Stream,
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        super::span("request", || self.stream.on_request_headers(&mut Envoy));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        super::span("response", || self.stream.on_response_headers(&mut Envoy));
        Action::Continue
    }
}

/// One downstream connection, counted from open to close.
struct ConnectionFilter {
    counter: Option<Rc<ConnectionCounter>>,
    counted: Option<Counted>,
}

impl Context for ConnectionFilter {}

impl StreamContext for ConnectionFilter {
    fn on_new_connection(&mut self) -> Action {
        // The connection's own peer (the network filter sees no X-Forwarded-For). Unix sockets
        // and the like have no address: nothing to count.
        let source = ffi::property(&["source", "address"]).ok().flatten();
        let ip = source.and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse::<SocketAddr>().ok()).map(|a| a.ip());
        if let (Some(counter), Some(ip)) = (&self.counter, ip) {
            self.counted = Some(counter.opened(&Envoy, ip));
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer: PeerType) {
        if let (Some(counter), Some(counted)) = (&self.counter, self.counted.take()) {
            counter.closed(&Envoy, counted);
        }
    }
}
