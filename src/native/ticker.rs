//! Housekeeping's clock for a configuration: Envoy gives a dynamic module's filters no timer of
//! their own, so a thread of the module commits one event per `housekeeping::PERIOD` to the
//! configuration's scheduler, and Envoy runs the configuration's `..._config_scheduled` hook for
//! it on the main thread, where the sweep runs (as in the Wasm build's main-thread tick). The
//! thread does nothing else; it stops when the configuration goes.

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

/// A kind of configuration's scheduler callbacks (HTTP filter, network filter).
#[derive(Clone, Copy)]
pub struct SchedulerCalls {
    pub new: unsafe extern "C" fn(abi::ConfigEnvoyPtr) -> *mut c_void,
    pub commit: unsafe extern "C" fn(*mut c_void, u64),
    pub delete: unsafe extern "C" fn(*mut c_void),
}

pub const HTTP: SchedulerCalls = SchedulerCalls {
    new: abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new,
    commit: abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit,
    delete: abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete,
};

pub const NETWORK: SchedulerCalls = SchedulerCalls {
    new: abi::envoy_dynamic_module_callback_network_filter_config_scheduler_new,
    commit: abi::envoy_dynamic_module_callback_network_filter_config_scheduler_commit,
    delete: abi::envoy_dynamic_module_callback_network_filter_config_scheduler_delete,
};

pub struct Ticker {
    calls: SchedulerCalls,
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
    pub fn start(calls: SchedulerCalls, config: abi::ConfigEnvoyPtr) -> Option<Ticker> {
        // SAFETY: Envoy's configuration pointer (of the kind `calls` is for), valid during the
        // configuration hook.
        let scheduler = unsafe { (calls.new)(config) };
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
                    unsafe { (calls.commit)(handle.0, TICK) };
                }
            }
        });
        match thread {
            Ok(thread) => Some(Ticker { calls, scheduler, stop, thread: Some(thread) }),
            Err(error) => {
                log::warn!("housekeeping: no thread for its clock ({error}); expired entries are reclaimed only when their bucket fills");
                // SAFETY: created above and never shared.
                unsafe { (calls.delete)(scheduler) };
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
        unsafe { (self.calls.delete)(self.scheduler) };
    }
}
