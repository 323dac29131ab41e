//! `dispatcher`: sets up the allocator and the log, parses the command line and runs the
//! command ([`dispatcher::cli`]).

use clap::Parser;

/// mimalloc instead of glibc's malloc: the request path allocates a little at every step
/// (CGI variables, headers, bodies), and in an A/B run on the echo path mimalloc took 2 us of
/// CPU off each request and added 5% requests/s.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Log lines are formatted on the caller's thread and written by a background thread in
    // batches (one write(2) per batch, see `telemetry::log_writer`).
    let (writer, log_guard) = match dispatcher::BatchedLog::new(std::io::stderr()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot start the log writer's thread: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = dispatcher::cli::Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        // One JSON object per line: time, level, target, the fields (function, request_id,
        // ...) and the message, flattened for log shippers.
        dispatcher::cli::LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        dispatcher::cli::LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(dispatcher::cli::run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    // Flush the log before the final word, so the order on stderr is the order of events.
    drop(log_guard);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
