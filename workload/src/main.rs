//! `vault-workload --addr 127.0.0.1:8000 --key vault_sk_…`: sends the training mix to a
//! running gateway and prints how each kind of request was answered. Exits 1 when any
//! answer was not the expected one, 2 when the gateway cannot be used.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use vault_workload::Plan;

const USAGE: &str = "usage: vault-workload --addr HOST:PORT --key USER_KEY [--model ID] [--requests N]\n\
  Sends the request mix a profile-guided build is trained on: N requests on one connection,\n\
  then 10×N over 64 connections (N defaults to 4000). The model is the first one the\n\
  gateway lists unless named.";

struct Args {
    addr: SocketAddr,
    key: String,
    model: Option<String>,
    requests: usize,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut addr, mut key, mut model, mut requests) = (None, None, None, 4_000);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--key" => key = Some(value()?),
            "--model" => model = Some(value()?),
            "--requests" => requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args { addr: addr.ok_or("--addr is required")?, key: key.ok_or("--key is required")?, model, requests })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        // Asked for help: the usage, and success.
        Err(why) if why.is_empty() => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("vault-workload: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let model = match args.model {
        Some(model) => model,
        None => match vault_workload::first_model(args.addr, &args.key).await {
            Ok(model) => model,
            Err(err) => {
                eprintln!("vault-workload: {err}");
                return ExitCode::from(2);
            }
        },
    };
    let plan = Plan::standard(args.requests);
    let started = std::time::Instant::now();
    let report = match vault_workload::run(args.addr, &args.key, &model, &plan).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("vault-workload: {err}");
            return ExitCode::from(2);
        }
    };
    let mut summary =
        format!("{} requests in {:.1} s, model {model}\n", report.total(), started.elapsed().as_secs_f64());
    for (kind, tally) in &report.tallies {
        summary += &format!("  {:<18} {:>7} as expected, {:>5} not\n", kind.name(), tally.expected, tally.unexpected);
        if let Some(first) = &tally.first_unexpected {
            summary += &format!("    first unexpected answer: {first}\n");
        }
    }
    let _ = std::io::stdout().write_all(summary.as_bytes());
    if report.unexpected() > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
