//! `envoy-persistence`: the operator's command-line tool. Finds misconfigurations before Envoy
//! runs (`check`), makes keys (`keygen`) and explains a client's token (`inspect-token`).
//! Exit status: 0 all good, 1 findings (or a token that does not open), 2 could not run.

use base64::Engine;
use envoy_persistence::check::{self, Document};
use envoy_persistence::config::Config;
use envoy_persistence::inspect::{self, Inspection};
use envoy_persistence::keyring::{Keyring, KEY_LEN};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
envoy-persistence: tools for the envoy-persistence filter

Usage: envoy-persistence <command> [options]

Commands:
  check <file>...        find misconfigurations in Envoy configurations, Istio resources and
                         plugin configurations, before Envoy runs
  keygen [--id N]        print a new key entry for the plugin configuration's \"keys\"
  inspect-token --keys <file> [--name NAME] [--at TIME] <value>
                         what a client's cookie or header value holds, or why it does not open

Run `envoy-persistence <command> --help` for a command's details.
Exit status: 0 all good, 1 findings (or a token that does not open), 2 could not run.";

const CHECK_USAGE: &str = "\
Usage: envoy-persistence check <file>...

Reads every file (YAML, several documents allowed, or JSON) and checks them together, so that an
Envoy bootstrap given with its LDS, RDS and CDS files resolves route configurations and clusters
across them. Recognised: Envoy bootstraps (static_resources), xDS discovery files (resources),
Istio WasmPlugin, Service and DestinationRule resources, Envoy Gateway EnvoyExtensionPolicy,
HTTPRoute, EnvoyProxy and BackendTrafficPolicy resources, and bare plugin configurations.

Each finding names the file, the path inside it, what happens at run time and the fix. The checks:
plugin configurations the filter would reject (with its own messages); stateful_session missing,
misplaced or reading another header; override_host_status contradicting a profile's server_down;
clusters without health checks or outlier detection; client IP keys without use_remote_address or
without the connection-counting network filter in the same VM; token profiles without keys; the
override header not removed from requests and responses; routes disabling only one of the two
filters; TLS session ids without set_filter_state; route metadata or \"routes\" naming what does not
exist.

Exit status: 0 no findings, 1 findings, 2 a file could not be read or holds nothing to check.";

const KEYGEN_USAGE: &str = "\
Usage: envoy-persistence keygen [--id N]

Prints a key entry for the plugin configuration's \"keys\", 32 bytes from the operating system's
random source: {\"id\": N, \"secret\": \"<base64>\"} (N defaults to 1; 1 to 255). Every replica needs
the same keys; to rotate, add the new key, make it primary_key_id, and later remove the old one.";

const INSPECT_USAGE: &str = "\
Usage: envoy-persistence inspect-token --keys <file> [--name NAME] [--at TIME] <value>

Opens a cookie or header value a client sent (NAME=value accepted) with the keys of <file> and
prints what it holds: the profile, key id, server, when it was issued, its expiry and idle window,
and whether the filter honours it now. If it does not open, says why for each profile it tried.

  --keys <file>  a plugin configuration, an Envoy configuration or Istio WasmPlugin holding one,
                 or a JSON list of keys ([{\"id\": 1, \"secret\": \"...\"}]); a configuration's
                 keys_env is read from this command's environment
  --name NAME    the cookie or header name (default: every profile that seals tokens)
  --at TIME      judge expiry at TIME (Unix seconds or RFC 3339) instead of now

Exit status: 0 opened and honoured, 1 not opened or no longer honoured, 2 could not run.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => return usage_error(USAGE, "no command given"),
    };
    let help = rest.iter().any(|a| a == "--help" || a == "-h");
    let result = match command {
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "check" if help => Ok(print_help(CHECK_USAGE)),
        "keygen" if help => Ok(print_help(KEYGEN_USAGE)),
        "inspect-token" if help => Ok(print_help(INSPECT_USAGE)),
        "check" => run_check(rest),
        "keygen" => keygen(rest),
        "inspect-token" => inspect_token(rest),
        other => return usage_error(USAGE, &format!("unknown command {other:?}")),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(usage, why)) => usage_error(usage, &why),
        Err(Failure::Run(why)) => {
            eprintln!("envoy-persistence: {why}");
            ExitCode::from(2)
        }
    }
}

enum Failure {
    Usage(&'static str, String),
    Run(String),
}

fn print_help(usage: &str) -> ExitCode {
    println!("{usage}");
    ExitCode::SUCCESS
}

fn usage_error(usage: &str, why: &str) -> ExitCode {
    eprintln!("envoy-persistence: {why}\n\n{usage}");
    ExitCode::from(2)
}

fn read_files(files: &[String]) -> Result<Vec<Document>, Failure> {
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| Failure::Run(format!("{file}: {e}")))?;
        documents.extend(check::read_documents(file, &text).map_err(Failure::Run)?);
    }
    Ok(documents)
}

fn run_check(args: &[String]) -> Result<ExitCode, Failure> {
    if let Some(option) = args.iter().find(|a| a.starts_with('-')) {
        return Err(Failure::Usage(CHECK_USAGE, format!("unknown option {option}")));
    }
    if args.is_empty() {
        return Err(Failure::Usage(CHECK_USAGE, "no files given".into()));
    }
    let documents = read_files(args)?;
    let plugins = check::plugin_configurations(&documents).len();
    if plugins == 0 {
        return Err(Failure::Run(format!("found no persistence filter, Istio WasmPlugin or plugin configuration in {}: nothing to check", args.join(", "))));
    }
    let findings = check::check(&documents);
    for finding in &findings {
        println!("{finding}\n");
    }
    match findings.len() {
        0 => {
            println!("ok: {plugins} plugin configuration(s) in {} file(s), no findings", args.len());
            Ok(ExitCode::SUCCESS)
        }
        n => {
            println!("{n} finding(s) in {plugins} plugin configuration(s)");
            Ok(ExitCode::from(1))
        }
    }
}

fn keygen(args: &[String]) -> Result<ExitCode, Failure> {
    let id = match args {
        [] => 1,
        [flag, id] if flag == "--id" => {
            id.parse::<u8>().ok().filter(|id| *id >= 1).ok_or_else(|| Failure::Usage(KEYGEN_USAGE, format!("--id {id}: expected 1 to 255")))?
        }
        _ => return Err(Failure::Usage(KEYGEN_USAGE, format!("unexpected arguments {args:?}"))),
    };
    let mut secret = [0u8; KEY_LEN];
    getrandom::fill(&mut secret).map_err(|e| Failure::Run(format!("the operating system's random source failed: {e}")))?;
    println!("{{\"id\": {id}, \"secret\": \"{}\"}}", base64::engine::general_purpose::STANDARD.encode(secret));
    Ok(ExitCode::SUCCESS)
}

fn inspect_token(args: &[String]) -> Result<ExitCode, Failure> {
    let (mut keys, mut name, mut at, mut value) = (None, None, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut operand = |option: &str| args.next().cloned().ok_or_else(|| Failure::Usage(INSPECT_USAGE, format!("{option} needs a value")));
        match arg.as_str() {
            "--keys" => keys = Some(operand("--keys")?),
            "--name" => name = Some(operand("--name")?),
            "--at" => at = Some(operand("--at")?),
            option if option.starts_with("--") => return Err(Failure::Usage(INSPECT_USAGE, format!("unknown option {option}"))),
            _ if value.is_some() => return Err(Failure::Usage(INSPECT_USAGE, "give one value".into())),
            _ => value = Some(arg.clone()),
        }
    }
    let keys = keys.ok_or_else(|| Failure::Usage(INSPECT_USAGE, "--keys <file> is required".into()))?;
    let value = value.ok_or_else(|| Failure::Usage(INSPECT_USAGE, "no value given".into()))?;
    let now = match at {
        None => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
        Some(at) => at
            .parse::<u64>()
            .ok()
            .or_else(|| humantime::parse_rfc3339(&at).ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs()))
            .ok_or_else(|| Failure::Usage(INSPECT_USAGE, format!("--at {at}: expected Unix seconds or an RFC 3339 time such as 2026-12-01T12:00:00Z")))?,
    };
    let config = keys_config(&keys)?;
    let primary = config.primary_key_id.ok_or_else(|| {
        Failure::Run(format!("{keys}: the configuration has no keys (each Envoy process then makes its own: nothing outside it can open its tokens)"))
    })?;
    let keyring = Keyring::from_secrets(&config.keys, primary).ok_or_else(|| Failure::Run(format!("{keys}: the keys do not form a keyring")))?;
    match inspect::inspect(&keyring, &inspect::carriers(&config, name.as_deref()), &value, now) {
        Inspection::Opened { text, honoured } => {
            println!("{text}");
            Ok(if honoured { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Inspection::NotOpened(why) => {
            println!("does not open:\n{why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The plugin configuration holding the keys: a bare keys list, or the first plugin
/// configuration found in the file.
fn keys_config(file: &str) -> Result<Config, Failure> {
    let documents = read_files(&[file.to_string()])?;
    let text = match documents.first().map(|d| &d.value) {
        Some(list @ serde_json::Value::Array(_)) => serde_json::json!({ "keys": list }).to_string(),
        _ => {
            let found = check::plugin_configurations(&documents);
            let (_, path, text) = found.into_iter().next().ok_or_else(|| Failure::Run(format!("{file}: found no plugin configuration or keys list")))?;
            text.map_err(|why| Failure::Run(format!("{file}: {path}: configuration {why}")))?
        }
    };
    // keys_env is read from this process's environment, as Envoy's VM would.
    Config::parse_with_environment(text.as_bytes(), &|name| std::env::var(name).ok()).map_err(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Failure::Run(format!("{file}: the plugin configuration is invalid:\n  {}", errors.join("\n  ")))
    })
}
