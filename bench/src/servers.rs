//! The two HTTP servers the bench compares: the dispatcher serving `echo.wasm`, and the native
//! hyper echo server. Both answer `POST /echo` with the request body.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::artifacts::Artifacts;
use crate::process::ChildGuard;

/// The path both servers answer on.
pub const ECHO_PATH: &str = "/echo";

/// How long a server may take to say it is listening (a cold dispatcher compiles first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The path the std-only echo answers on (served beside `echo` by the throughput section).
pub const ECHO_STD_PATH: &str = "/echo-std";

/// A folder of manifests holding only `echo`, for `dispatcher serve --manifests`.
pub fn write_echo_manifests(dir: &Path, echo_wasm: &Path) -> anyhow::Result<PathBuf> {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)
        .with_context(|| format!("cannot create {}", manifests.display()))?;
    add_post_function(&manifests, "echo", echo_wasm, ECHO_PATH)?;
    Ok(manifests)
}

/// Writes the manifest of a function `name` serving `POST path` into `manifests`.
pub fn add_post_function(
    manifests: &Path,
    name: &str,
    wasm: &Path,
    path: &str,
) -> anyhow::Result<()> {
    let wasm = wasm
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", wasm.display()))?;
    // `{:?}` quotes the path as a TOML basic string would (escapes included).
    let manifest = format!(
        "name = \"{name}\"\n\
         wasm = {:?}\n\
         \n\
         [trigger.http]\n\
         path = \"{path}\"\n\
         methods = [\"POST\"]\n\
         \n\
         [limits]\n\
         max_concurrency = 256\n",
        wasm.to_string_lossy()
    );
    let file = manifests.join(format!("{name}.toml"));
    std::fs::write(&file, manifest).with_context(|| format!("cannot write {}", file.display()))
}

/// `dispatcher serve` on `listen` with the given manifests and cache, logging to stderr as in
/// production (`RUST_LOG` is inherited, default `info`: one line per request), without colours.
pub fn dispatcher_command(
    artifacts: &Artifacts,
    manifests: &Path,
    listen: SocketAddr,
    cache_dir: &Path,
) -> Command {
    let mut cmd = Command::new(&artifacts.dispatcher);
    cmd.arg("serve")
        .arg("--manifests")
        .arg(manifests)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--cache-dir")
        .arg(cache_dir)
        // Deploys live in memory: a catalog inherited from the shell (`make` exports
        // DATABASE_URL) would add whatever it holds to the servers under test.
        .env_remove("DATABASE_URL")
        .env_remove("DISPATCHER_DB")
        .env("NO_COLOR", "1");
    cmd
}

/// `native_echo ADDR`.
pub fn native_echo_command(artifacts: &Artifacts, listen: SocketAddr) -> Command {
    let mut cmd = Command::new(&artifacts.native_echo);
    cmd.arg(listen.to_string());
    cmd
}

/// Starts a server command and waits for its `<prefix> http://ADDR` line; returns it and ADDR.
pub fn start(
    name: &str,
    cmd: &mut Command,
    ready_prefix: &str,
    log: Option<&Path>,
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let mut child = ChildGuard::spawn(name, cmd, log)?;
    let url = child.wait_for_line(ready_prefix, READY_TIMEOUT)?;
    let addr = url
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("{name} printed an unexpected address: {url}"))?;
    Ok((child, addr))
}

/// The readiness line of `dispatcher serve`.
pub const DISPATCHER_READY: &str = "dispatcher listening on ";
/// The readiness line of `native_echo`.
pub const NATIVE_READY: &str = "native_echo listening on ";
