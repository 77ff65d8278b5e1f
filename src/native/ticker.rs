//! Housekeeping's clock for a configuration: Envoy gives a dynamic module no timer of the HTTP
//! filter's own, so a thread of the module commits one event per `housekeeping::PERIOD` to the
//! configuration's scheduler, and Envoy runs `on_http_filter_config_scheduled` for it on the main
//! thread, where the sweep runs (as in the Wasm build's main-thread tick). The thread does nothing
//! else; it stops when the configuration goes.

use super::abi;
use crate::housekeeping::PERIOD;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Envoy's scheduler handle: committing to it from any thread is what it is for.
struct Scheduler(*mut c_void);

// SAFETY: Envoy's config scheduler posts to the main thread's dispatcher, which is thread-safe;
// the handle is deleted only after the thread that commits is joined.
unsafe impl Send for Scheduler {}

/// The event id of a housekeeping tick.
pub const TICK: u64 = 1;

pub struct Ticker {
    scheduler: *mut c_void,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

// SAFETY: the scheduler pointer is only used by `Drop` (on the main thread, where Envoy destroys
// configurations) and by the ticking thread, which is joined first.
unsafe impl Send for Ticker {}
unsafe impl Sync for Ticker {}

impl Ticker {
    /// Starts ticking for the configuration `config` (main thread). None when Envoy gives no
    /// scheduler or no thread can be started (logged: expired entries are then reclaimed only
    /// when their bucket fills).
    pub fn start(config: abi::ConfigEnvoyPtr) -> Option<Ticker> {
        // SAFETY: Envoy's configuration pointer, valid during the configuration hook.
        let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        if scheduler.is_null() {
            log::warn!("housekeeping: Envoy gave no scheduler; expired entries are reclaimed only when their bucket fills");
            return None;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let handle = Scheduler(scheduler);
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("persistence-tick".into()).spawn(move || {
            let handle = handle;
            let (lock, wake) = &*stopping;
            let mut stopped = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            while !*stopped {
                let (guard, timeout) = wake.wait_timeout(stopped, PERIOD).unwrap_or_else(|poisoned| poisoned.into_inner());
                stopped = guard;
                if !*stopped && timeout.timed_out() {
                    // SAFETY: the scheduler is deleted only after this thread is joined.
                    unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(handle.0, TICK) };
                }
            }
        });
        match thread {
            Ok(thread) => Some(Ticker { scheduler, stop, thread: Some(thread) }),
            Err(error) => {
                log::warn!("housekeeping: no thread for its clock ({error}); expired entries are reclaimed only when their bucket fills");
                // SAFETY: created above and never shared.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler) };
                None
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // SAFETY: the only other user of the scheduler, the thread, has ended.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler) };
    }
}
