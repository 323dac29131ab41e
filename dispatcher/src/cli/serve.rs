//! `serve` and `check`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::EngineArgs;
use crate::platform::{self, Platform};

/// Binds, deploys, says where it listens, and serves until SIGINT or SIGTERM.
pub async fn serve(config: platform::Config, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = platform::bind(listen).await?;
    let addr = listener.local_addr()?;
    let platform = Platform::start_on(config, &listener).await?;
    // The one line scripts and tests wait for.
    println!("dispatcher listening on http://{addr}");
    std::io::stdout().flush().context("stdout")?;
    platform.serve(listener, shutdown_signal()).await
}

/// Validates the manifests and compiles their modules.
pub async fn check(manifests: &Path, engine: &EngineArgs) -> anyhow::Result<()> {
    let n = platform::check(manifests, &engine.runtime_config()).await?;
    println!("{n} function(s) OK");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
