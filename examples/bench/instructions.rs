//! Instructions per request, counted by valgrind's callgrind in Envoy's worker thread.
//!
//! Wall-clock and CPU time on a shared virtual machine swing by a fifth from one second to the
//! next (the host deschedules the virtual CPU, and the guest still counts that time as ours), so the
//! targets are also judged on a count that does not depend on the machine's load: the instructions
//! Envoy's worker executes for a batch of identical requests on one keep-alive connection, after a
//! warm-up (V8 compiles the module's hot functions in tiers). Two batches per row show the count is
//! steady. Idle timers add a little per wall-clock second, the same for every row.

use crate::common::{Connection, Envoy, EnvoyConfig, Launch};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Count {
    /// Instructions per request of each measured batch.
    pub batches: Vec<f64>,
    /// Of those, instructions in the module's own compiled code, per request (mean of the batches).
    pub wasm_code: f64,
}

impl Count {
    pub fn per_request(&self) -> f64 {
        self.batches.iter().sum::<f64>() / self.batches.len().max(1) as f64
    }

    /// Largest difference between batches, relative to their mean.
    pub fn spread(&self) -> f64 {
        let max = self.batches.iter().copied().fold(f64::MIN, f64::max);
        let min = self.batches.iter().copied().fold(f64::MAX, f64::min);
        (max - min) / self.per_request()
    }
}

/// Starts `config` under callgrind (one worker), runs `prepare` against it for the headers a client
/// of the row sends, then counts `batches` batches of `requests` GETs of `/`.
pub fn count(
    config: &EnvoyConfig,
    prepare: &(dyn Fn(SocketAddr) -> Vec<(String, String)> + Send + Sync),
    warmup: usize,
    requests: usize,
    batches: usize,
) -> Count {
    let out = tempfile::Builder::new().prefix("envoy-persistence-callgrind").tempdir().unwrap();
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        "--separate-threads=yes".to_string(),
        // Every function named in full in every dump, so that `wasm_code` can classify each one.
        "--compress-strings=no".to_string(),
        format!("--callgrind-out-file={}/cg.%p", out.path().display()),
    ];
    let launch = Launch { quiet: true, wrapper, ..Launch::workers(1) };
    let started = Instant::now();
    let envoy = Envoy::launch(config, &launch).unwrap_or_else(|log| panic!("Envoy under valgrind did not start:\n{log}"));
    let launched = started.elapsed();
    envoy.wait_all_healthy();
    let healthy = started.elapsed();
    let headers = prepare(envoy.addr());
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
    let mut connection = Connection::open(envoy.addr());
    let mut send = |n: usize| {
        for _ in 0..n {
            let response = connection.get("/", &headers);
            assert_eq!(response.status, 200, "{response:?}");
        }
    };
    send(warmup);
    let warm = started.elapsed();
    let pid = envoy.pid().expect("running");
    let mut dumps = 0;
    dump(pid, out.path(), &mut dumps);
    let (batches, wasm_code): (Vec<f64>, Vec<f64>) = (0..batches)
        .map(|_| {
            send(requests);
            let (total, wasm) = dump(pid, out.path(), &mut dumps);
            (total as f64 / requests as f64, wasm as f64 / requests as f64)
        })
        .unzip();
    let wasm_code = wasm_code.iter().sum::<f64>() / wasm_code.len().max(1) as f64;
    let envoy_addr = envoy.addr();
    eprintln!("  {}: started in {launched:.0?}, healthy {healthy:.0?}, warm {warm:.0?}, counted {:.0?}", envoy.addr(), started.elapsed());
    drop(envoy);
    // For a function-level look (callgrind_annotate), keep the dumps: BENCH_KEEP_CALLGRIND=1.
    if std::env::var_os("BENCH_KEEP_CALLGRIND").is_some() {
        eprintln!("  {}: callgrind dumps kept in {}", envoy_addr, out.keep().display());
    }
    Count { batches, wasm_code }
}

/// Asks callgrind for a dump (which also zeroes its counters) and returns the instruction total of
/// the busiest thread in it (the worker, while requests flow) and how much of it was module code.
fn dump(pid: u32, dir: &Path, dumps: &mut u32) -> (u64, u64) {
    *dumps += 1;
    let status = Command::new("callgrind_control").arg("-d").arg(pid.to_string()).output().expect("callgrind_control (valgrind)");
    assert!(status.status.success(), "callgrind_control -d failed: {}", String::from_utf8_lossy(&status.stderr));
    let prefix = format!("cg.{pid}.{}-", dumps);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = usize::MAX;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
            .collect();
        let totals: Vec<(u64, &PathBuf)> = files.iter().filter_map(|f| Some((totals(f)?, f))).collect();
        // Complete when every thread's file is finished and no new one appeared meanwhile.
        if !files.is_empty() && totals.len() == files.len() && files.len() == seen {
            let (total, busiest) = totals.into_iter().max().unwrap();
            return (total, wasm_code(busiest));
        }
        seen = files.len();
        assert!(Instant::now() < deadline, "no callgrind dump {prefix}* in {}", dir.display());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `totals:` line of a finished dump file (None while it is being written).
fn totals(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| l.strip_prefix("totals:")).and_then(|v| v.trim().parse().ok())
}

/// Exclusive instructions of a dump spent in code V8 compiled from the module: functions callgrind
/// cannot name (object `???`) at addresses above Envoy's binary (valgrind maps the executable low,
/// at 0x108000; V8 puts generated code in high anonymous mappings). Envoy's own code, V8's
/// built-ins and the libraries, host calls included, are the rest.
fn wasm_code(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let (mut object_unnamed, mut in_module, mut after_call, mut sum) = (false, false, false, 0u64);
    for line in text.lines() {
        if let Some(object) = line.strip_prefix("ob=") {
            object_unnamed = object == "???";
        } else if let Some(function) = line.strip_prefix("fn=") {
            let address = function.strip_prefix("0x").and_then(|hex| u64::from_str_radix(hex.get(..16).unwrap_or(hex), 16).ok());
            in_module = object_unnamed && address.is_some_and(|a| a >= 0x1000_0000);
        } else if line.starts_with("calls=") {
            after_call = true; // the next cost line is the callee's inclusive cost
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if !after_call && in_module {
                sum += line.split_whitespace().nth(1).and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
            }
            after_call = false;
        }
    }
    sum
}
