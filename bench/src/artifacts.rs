//! The binaries and modules the bench runs, built (if stale) and found next to its own
//! executable, so the bench works from `make bench` and from a bare `cargo run -p bench`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Paths of everything the sections start or load.
#[derive(Debug)]
pub struct Artifacts {
    /// `target/release/dispatcher`: the product, started as a server.
    pub dispatcher: PathBuf,
    /// `target/release/noop_native`: the baseline for one invocation.
    pub noop_native: PathBuf,
    /// `target/release/native_echo`: the baseline HTTP server.
    pub native_echo: PathBuf,
    /// `target/wasm32-wasip1/release/noop.wasm`.
    pub noop_wasm: PathBuf,
    /// `target/wasm32-wasip1/release/echo.wasm`.
    pub echo_wasm: PathBuf,
    /// `target/wasm32-wasip1/release/echo_std.wasm`: the same echo with std alone.
    pub echo_std_wasm: PathBuf,
}

const WASM_TARGET: &str = "wasm32-wasip1";

impl Artifacts {
    /// Runs cargo for the native bins (this package's baselines and the dispatcher) and for the
    /// two functions, a no-op when they are up to date (as under `make bench`); skipped when
    /// `BENCH_SKIP_BUILD` is set, to run a bench binary on its own.
    pub fn build_and_locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
        let native_dir = exe
            .parent()
            .context("the bench's executable has no parent folder")?
            .to_path_buf();
        // target/release -> target/wasm32-wasip1/release (the profile folder's name is kept).
        let profile = native_dir
            .file_name()
            .context("the bench's folder has no name")?;
        let target_dir = native_dir
            .parent()
            .context("the bench's folder has no parent")?;
        let wasm_dir = target_dir.join(WASM_TARGET).join(profile);

        if std::env::var_os("BENCH_SKIP_BUILD").is_none() {
            build()?;
        }

        let artifacts = Artifacts {
            dispatcher: native_dir.join("dispatcher"),
            noop_native: native_dir.join("noop_native"),
            native_echo: native_dir.join("native_echo"),
            noop_wasm: wasm_dir.join("noop.wasm"),
            echo_wasm: wasm_dir.join("echo.wasm"),
            echo_std_wasm: wasm_dir.join("echo_std.wasm"),
        };
        for path in [
            &artifacts.dispatcher,
            &artifacts.noop_native,
            &artifacts.native_echo,
            &artifacts.noop_wasm,
            &artifacts.echo_wasm,
            &artifacts.echo_std_wasm,
        ] {
            must_exist(path)?;
        }
        Ok(artifacts)
    }
}

/// `cargo run -p bench` builds only the `bench` bin, so the baselines beside it may be missing or
/// stale; the dispatcher binary and the functions are built here too, for runs outside `make`.
fn build() -> anyhow::Result<()> {
    cargo(
        &[
            "build",
            "--release",
            "-p",
            "bench",
            "-p",
            "dispatcher",
            "--bins",
        ],
        &[],
    )?;
    // The same settings as the Makefile's `functions`, so neither build undoes the other.
    cargo(
        &[
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "-p",
            "noop",
            "-p",
            "echo",
            "-p",
            "echo-std",
        ],
        WASM_PROFILE,
    )
    .context("building the functions (is the wasm32-wasip1 target installed? run scripts/setup.sh)")
}

fn must_exist(path: &Path) -> anyhow::Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} is missing after the build: run `make bench`",
            path.display()
        )
    }
}

/// Runs `cargo ARGS` (the cargo that started us, if any) quietly, failing on a non-zero exit.
/// The profile settings of the function builds (the Makefile's `WASM_PROFILE`).
const WASM_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_LTO", "true"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
];

fn cargo(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .arg("--quiet")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        anyhow::bail!("`cargo {}` failed: {status}", args.join(" "));
    }
    Ok(())
}
