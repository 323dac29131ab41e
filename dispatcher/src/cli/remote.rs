//! The commands that talk to a running platform's admin API: `deploy`, `list`, `show`,
//! `remove`, `rollback`, `invoke`. Each prints a table, or `--json`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::client::Client;
use super::ClientArgs;
use crate::api::{Details, Report, Summary};

impl ClientArgs {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.server, self.token.clone())
    }

    /// `value` as JSON with `--json`, else as `human` prints it.
    fn print<T: Serialize + ?Sized>(
        &self,
        value: &T,
        human: impl FnOnce(&T),
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            human(value);
        }
        Ok(())
    }
}

pub async fn deploy(args: &ClientArgs, manifests: &[PathBuf]) -> anyhow::Result<()> {
    let c = args.client()?;
    let mut reports = Vec::new();
    for m in manifests {
        reports.push(c.deploy(m).await?);
    }
    args.print(reports.as_slice(), print_reports)
}

/// Prints a function's recent log lines, `--follow`ing new ones until stopped.
pub async fn logs(
    args: &ClientArgs,
    name: &str,
    request: Option<&str>,
    follow: bool,
) -> anyhow::Result<()> {
    let json = args.json;
    let mut out = std::io::stdout();
    let mut failed = None;
    args.client()?
        .logs(name, request, follow, |line| {
            let written = if json {
                serde_json::to_string(&line)
                    .map_err(std::io::Error::other)
                    .and_then(|text| writeln!(out, "{text}"))
            } else {
                let source = match line.source {
                    crate::api::LogSource::Guest => "guest",
                    crate::api::LogSource::Platform => "platform",
                };
                writeln!(
                    out,
                    "{} {} {source} {}: {}",
                    line.at,
                    line.request_id.as_deref().unwrap_or("-"),
                    line.level,
                    line.message
                )
            };
            // Flushed per line, so `--follow | grep` sees lines as they come.
            if let Err(e) = written.and_then(|()| out.flush()) {
                failed.get_or_insert(e);
            }
        })
        .await?;
    match failed {
        Some(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
        None => Ok(()),
    }
}

pub async fn list(args: &ClientArgs) -> anyhow::Result<()> {
    let functions = args.client()?.list().await?;
    args.print(functions.as_slice(), print_list)
}

pub async fn show(args: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let details = args.client()?.show(name).await?;
    args.print(&details, print_details)
}

pub async fn remove(args: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let report = args.client()?.remove(name).await?;
    args.print(&report, |r| print_reports(std::slice::from_ref(r)))
}

pub async fn rollback(args: &ClientArgs, name: &str, to: Option<u32>) -> anyhow::Result<()> {
    let report = args.client()?.rollback(name, to).await?;
    args.print(&report, |r| print_reports(std::slice::from_ref(r)))
}

/// Runs the function once; its body goes to stdout as is.
pub async fn invoke(
    args: &ClientArgs,
    name: &str,
    data: Option<&str>,
    query: Option<&str>,
) -> anyhow::Result<()> {
    let body = match data {
        None => Vec::new(),
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("reading the body from stdin")?;
            buf
        }
        Some(d) => match d.strip_prefix('@') {
            Some(file) => {
                std::fs::read(file).with_context(|| format!("cannot read --data file {file}"))?
            }
            None => d.as_bytes().to_vec(),
        },
    };
    let out = args.client()?.invoke(name, query, body).await?;
    let mut stdout = std::io::stdout();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// Short hash for tables.
fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// Human size: 1.9 MiB.
fn size(n: u64) -> String {
    let n = n as f64;
    if n >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n / 1024.0)
    }
}

/// The table for `deploy`, `rollback` and `remove` reports.
fn print_reports(reports: &[Report]) {
    for r in reports {
        let compiled = match r.compiled {
            Some(true) => format!(", compiled in {} ms", r.load_ms),
            Some(false) => format!(", already compiled ({} ms)", r.load_ms),
            None => String::new(),
        };
        println!(
            "{:<11} {} version {} ({}, {}{compiled})",
            r.action.as_str(),
            r.name,
            r.version,
            short(&r.module_hash),
            size(r.module_size),
        );
    }
}

/// The table for `list`.
fn print_list(functions: &[Summary]) {
    println!(
        "{:<18} {:>7}  {:<28} {:<10} {:<27} {:<12} {:>9}",
        "NAME", "VERSION", "ROUTE", "SCHEDULES", "DEPLOYED AT", "MODULE", "SIZE"
    );
    for f in functions {
        println!(
            "{:<18} {:>7}  {:<28} {:<10} {:<27} {:<12} {:>9}",
            f.name,
            f.version,
            f.route.as_deref().unwrap_or("-"),
            f.schedules.len(),
            f.deployed_at,
            short(&f.module_hash),
            size(f.module_size),
        );
    }
}

/// The view for `show`.
fn print_details(d: &Details) {
    match &d.current {
        None => println!("not deployed (removed); its versions:"),
        Some(current) => {
            println!("name:       {}", current.name);
            println!("version:    {}", current.version);
            println!("route:      {}", current.route.as_deref().unwrap_or("-"));
            for sch in &current.schedules {
                println!("schedule:   {sch}");
            }
            println!(
                "module:     {} ({})",
                current.module_hash,
                size(current.module_size)
            );
            println!();
        }
    }
    println!(
        "  {:>7}  {:<27} {:<24} {:<12} {:>9}  SOURCE",
        "VERSION", "DEPLOYED AT", "BY", "MODULE", "SIZE"
    );
    for v in &d.versions {
        let mark = if Some(v.version) == d.current_version {
            "*"
        } else {
            " "
        };
        println!(
            "{mark} {:>7}  {:<27} {:<24} {:<12} {:>9}  {}",
            v.version,
            v.deployed_at,
            v.deployed_by,
            short(&v.module_hash),
            size(v.module_size),
            v.source,
        );
    }
}
