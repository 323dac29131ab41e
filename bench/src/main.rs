//! `make bench`: the dispatcher's costs, each printed beside a native baseline and its target.
//!
//! Every section is one module under [`sections`] that returns rows for the closing table, so a
//! new measurement is a new module plus one line in [`sections::ALL`].
//!
//! ```text
//! cargo run --release -p bench                 # every section
//! cargo run --release -p bench -- throughput   # only the named sections
//! cargo run --release -p bench -- soak         # sections::ON_REQUEST run only when named
//! ```

mod artifacts;
mod perf;
mod probe;
mod process;
mod report;
mod sections;
mod servers;
mod stats;
mod wrk;

use std::process::ExitCode;

use artifacts::Artifacts;
use report::Table;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen sections; `Ok(false)` if any of them failed (the others still run).
fn run() -> anyhow::Result<bool> {
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    for name in &chosen {
        if !sections::every().any(|s| s.name == name) {
            let names: Vec<&str> = sections::every().map(|s| s.name).collect();
            anyhow::bail!(
                "unknown section `{name}`: expected one of {}",
                names.join(", ")
            );
        }
    }
    let artifacts = Artifacts::build_and_locate()?;
    let busy = report::cpu_busy(std::time::Duration::from_secs(1));
    let busy = busy.map_or("unknown".into(), |b| format!("{:.0}%", b * 100.0));
    println!("CPU busy with other work before the bench: {busy}");

    let mut table = Table::default();
    let mut failed = Vec::new();
    for section in sections::every() {
        // No names: the default sections; names: exactly those.
        let wanted = if chosen.is_empty() {
            sections::ALL.iter().any(|s| s.name == section.name)
        } else {
            chosen.iter().any(|c| c == section.name)
        };
        if !wanted {
            continue;
        }
        println!("\n== {} ==", section.title);
        match (section.run)(&artifacts) {
            Ok(rows) => table.rows.extend(rows),
            Err(e) => {
                eprintln!("bench: section `{}` failed: {e:#}", section.name);
                failed.push(section.name);
            }
        }
    }

    println!();
    table.print();
    println!(
        "\nmachine: {}; CPU busy with other work before the bench: {busy}",
        report::machine()
    );
    if !failed.is_empty() {
        eprintln!("bench: failed sections: {}", failed.join(", "));
    }
    Ok(failed.is_empty())
}
