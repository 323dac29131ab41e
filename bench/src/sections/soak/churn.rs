//! Deploys and rollbacks during the soak, through the `dispatcher` CLI as an operator runs them:
//! every [`STEP`] a new version of one function (a changed `[env]`, and for `echo` the other of
//! two modules), then a rollback to the version before it, taking `echo` (under load), then
//! `list_orders` (under load, a 2 MB module), then `probe` (whose every-second schedule must
//! still run each fire time once), in turn.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use dispatcher::api::{Action, Report};

/// Between a deploy and its rollback, and between a rollback and the next deploy.
pub const STEP: Duration = Duration::from_millis(2500);

/// One function the churn redeploys.
pub struct Target {
    pub name: String,
    /// Its manifest as first deployed; each version adds `SOAK_VERSION` to its `[env]`.
    pub manifest: String,
    /// The modules its versions alternate between (one: every version keeps the module).
    pub modules: Vec<PathBuf>,
}

/// Counts of what the churn did, and its first failure.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub deploys: u64,
    pub deploy_failures: u64,
    pub rollbacks: u64,
    pub rollback_failures: u64,
    pub first_failure: Option<String>,
    /// The slowest deploy, CLI start to exit.
    pub slowest_deploy: Duration,
}

/// The churn's state across the soak's phases.
pub struct Churn {
    dispatcher: PathBuf,
    server: String,
    token: String,
    dir: PathBuf,
    targets: Vec<Target>,
    /// Deploys so far: picks the next target and numbers the versions.
    turn: usize,
    pub tally: Tally,
}

impl Churn {
    pub fn new(
        dispatcher: &Path,
        addr: SocketAddr,
        token: &str,
        dir: &Path,
        targets: Vec<Target>,
    ) -> Churn {
        Churn {
            dispatcher: dispatcher.to_path_buf(),
            server: format!("http://{addr}"),
            token: token.to_string(),
            dir: dir.to_path_buf(),
            targets,
            turn: 0,
            tally: Tally::default(),
        }
    }

    /// Deploy and rollback cycles until `until`; a cycle that would end later is not started.
    pub fn run_until(&mut self, until: Instant) {
        while Instant::now() + 2 * STEP <= until {
            self.cycle();
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }

    fn cycle(&mut self) {
        let target = &self.targets[self.turn % self.targets.len()];
        let version = self.turn + 1;
        let module = &target.modules[(self.turn / self.targets.len()) % target.modules.len()];
        let name = target.name.clone();
        let manifest = versioned(&target.manifest, version, module);
        self.turn += 1;

        let file = self.dir.join(format!("{name}-soak.toml"));
        let started = Instant::now();
        let deployed = std::fs::write(&file, manifest)
            .with_context(|| format!("cannot write {}", file.display()))
            .and_then(|()| self.cli(&["deploy", &file.to_string_lossy()]))
            .and_then(|out| expect_action::<Vec<Report>>(&out, Action::Deployed));
        self.tally.slowest_deploy = self.tally.slowest_deploy.max(started.elapsed());
        match deployed {
            Ok(()) => self.tally.deploys += 1,
            Err(e) => {
                self.tally.deploy_failures += 1;
                let failure = format!("deploy {name} (version with SOAK_VERSION={version}): {e:#}");
                self.tally.first_failure.get_or_insert(failure);
            }
        }
        std::thread::sleep(STEP);

        let rolled = self
            .cli(&["rollback", &name])
            .and_then(|out| expect_action::<Report>(&out, Action::RolledBack));
        match rolled {
            Ok(()) => self.tally.rollbacks += 1,
            Err(e) => {
                self.tally.rollback_failures += 1;
                let failure = format!("rollback {name}: {e:#}");
                self.tally.first_failure.get_or_insert(failure);
            }
        }
        std::thread::sleep(STEP);
    }

    /// `dispatcher ARGS --json` against the platform; its stdout, or its stderr as the error.
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.dispatcher)
            .args(args)
            .arg("--json")
            .env("DISPATCHER_SERVER", &self.server)
            .env("DISPATCHER_ADMIN_TOKEN", &self.token)
            .env("NO_COLOR", "1")
            .output()
            .context("cannot run the dispatcher CLI")?;
        anyhow::ensure!(
            out.status.success(),
            "`dispatcher {}` exited {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Checks that the CLI's `--json` answer reports `want` for every function it names.
fn expect_action<T: serde::de::DeserializeOwned + Into<Reports>>(
    out: &str,
    want: Action,
) -> anyhow::Result<()> {
    let reports: Reports = serde_json::from_str::<T>(out)
        .with_context(|| format!("unexpected CLI output: {out}"))?
        .into();
    anyhow::ensure!(!reports.0.is_empty(), "the CLI reported nothing");
    for r in &reports.0 {
        anyhow::ensure!(
            r.action == want,
            "{} version {}: {} where {} was expected",
            r.name,
            r.version,
            r.action.as_str(),
            want.as_str()
        );
    }
    Ok(())
}

/// Reports from a deploy (a list) or a rollback (one).
struct Reports(Vec<Report>);

impl From<Vec<Report>> for Reports {
    fn from(v: Vec<Report>) -> Self {
        Reports(v)
    }
}

impl From<Report> for Reports {
    fn from(r: Report) -> Self {
        Reports(vec![r])
    }
}

/// `manifest` with `wasm` pointing at `module` and `SOAK_VERSION = "N"` in its `[env]`, so
/// that every deploy is a new version.
pub fn versioned(manifest: &str, version: usize, module: &Path) -> String {
    let var = format!("SOAK_VERSION = \"{version}\"\n");
    let mut out = String::new();
    let mut has_env = false;
    for line in manifest.lines() {
        if line.trim_start().starts_with("wasm ") || line.trim_start().starts_with("wasm=") {
            // `{:?}` quotes the path as a TOML basic string would (escapes included).
            out.push_str(&format!("wasm = {:?}\n", module.to_string_lossy()));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[env]" {
            out.push_str(&var);
            has_env = true;
        }
    }
    if !has_env {
        out.push_str("\n[env]\n");
        out.push_str(&var);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_sets_the_module_and_adds_to_an_existing_env() {
        let base = "name = \"list_orders\"\nwasm = \"a.wasm\"\n\n[env]\nDATABASE_URL = \"x\"\n";
        let v = versioned(base, 7, Path::new("/m/b.wasm"));
        assert_eq!(
            v,
            "name = \"list_orders\"\nwasm = \"/m/b.wasm\"\n\n[env]\nSOAK_VERSION = \"7\"\nDATABASE_URL = \"x\"\n"
        );
    }

    #[test]
    fn a_version_adds_an_env_table_when_there_is_none() {
        let base = "name = \"echo\"\nwasm = \"a.wasm\"\n\n[limits]\nmemory_mb = 64\n";
        let v = versioned(base, 2, Path::new("a.wasm"));
        assert!(
            v.ends_with("[limits]\nmemory_mb = 64\n\n[env]\nSOAK_VERSION = \"2\"\n"),
            "{v}"
        );
    }
}
