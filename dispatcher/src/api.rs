//! The admin API's vocabulary: what the platform answers and the CLI reads, defined once with
//! both serde traits so that a renamed field breaks the build, not a table.
//!
//! Also the names of states that are stored and printed ([`FireStatus`]), so that the store,
//! the scheduler and `dispatcher runs` cannot disagree on a spelling.

use serde::{Deserialize, Serialize};

/// What a change did to one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new version was added and is current.
    Deployed,
    /// The same manifest and module were current already: nothing changed.
    Unchanged,
    /// An earlier version is current again.
    RolledBack,
    /// The function is no longer served.
    Removed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deployed => "deployed",
            Action::Unchanged => "unchanged",
            Action::RolledBack => "rolled_back",
            Action::Removed => "removed",
        }
    }
}

/// The answer to a deploy, rollback or removal, one per function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub version: u32,
    pub action: Action,
    pub module_hash: String,
    pub module_size: u64,
    /// Whether the module was compiled now or found compiled (`None` when nothing loaded).
    pub compiled: Option<bool>,
    /// Milliseconds spent compiling or loading the module.
    pub load_ms: u64,
}

/// One function as `GET /_dispatcher/functions` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub version: u32,
    /// `METHODS /path`, or `None` without an HTTP trigger.
    pub route: Option<String>,
    /// `name "cron" timezone`, one per schedule.
    pub schedules: Vec<String>,
    pub deployed_at: String,
    pub deployed_by: String,
    pub source: String,
    pub module_hash: String,
    pub module_size: u64,
}

/// One function with its history, for `GET /_dispatcher/functions/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Details {
    /// As served now; `None` once removed.
    pub current: Option<Summary>,
    /// The current version in the catalog (it can lead this replica by a moment).
    pub current_version: Option<u32>,
    /// Oldest first.
    pub versions: Vec<Version>,
}

/// One version of one function, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub name: String,
    pub version: u32,
    /// The manifest's text as deployed (`${VAR}` unexpanded). Not sent: it may name secrets'
    /// variables, and the CLI does not need it.
    #[serde(skip)]
    pub manifest: String,
    pub module_hash: String,
    pub module_size: u64,
    /// Where it came from: the manifest's path (start-up, `--watch`, CLI) or `api:FILE`.
    pub source: String,
    pub deployed_by: String,
    /// RFC 3339, UTC.
    pub deployed_at: String,
}

/// `GET /_dispatcher/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `ok` (200), `starting` or `draining` (both 503).
    pub status: String,
    /// How many functions this replica serves.
    pub functions: usize,
    /// Modules serving from baseline (Winch) code while Cranelift compiles them.
    #[serde(default)]
    pub optimizing: usize,
}

/// Every refusal and failure the platform answers: a kind, a sentence, and what the kind
/// needs besides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The kind, e.g. `not_found`, `overloaded`, `invalid`, `route_conflict`.
    pub error: String,
    /// The function the request reached, if any.
    #[serde(default)]
    pub function: Option<String>,
    /// What happened, for a person.
    pub message: String,
    /// Every problem of a refused deploy (kind `invalid`), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The route of a `route_conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The function that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Who wrote a log line of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The guest, on stderr.
    Guest,
    /// The platform, about the function (a failed invocation, say).
    Platform,
}

/// One line of `GET /_dispatcher/functions/NAME/logs` (a JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    /// The invocation that wrote it.
    pub request_id: Option<String>,
    pub source: LogSource,
    /// `info`, `warn`.
    pub level: String,
    pub message: String,
}

/// One recent invocation, for `GET /_dispatcher/functions/NAME/invocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// When it arrived; RFC 3339, UTC, milliseconds.
    pub at: String,
    pub request_id: String,
    /// `http`, `schedule`, `invoke`.
    pub trigger: String,
    /// `ok`, `timeout`, `memory_limit`, `output_limit`, `trap`, `exit`, `bad_output`,
    /// `overloaded`.
    pub outcome: String,
    /// The HTTP status answered (a schedule's: the function's `Status`, 0 if it wrote none).
    pub status: u16,
    pub duration_us: u64,
}

/// `GET /_dispatcher/functions/NAME/stats`: this replica's counts since it started, and
/// the last minute's rate and latency, for the dashboard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionStats {
    pub function: String,
    /// Invocations since this replica started (the `dispatcher_invocations_total` counters).
    pub total: u64,
    /// Those whose outcome was not `ok`, or whose status was 5xx.
    pub errors: u64,
    /// By outcome.
    pub by_outcome: std::collections::BTreeMap<String, u64>,
    /// The last minute (of the recent invocations kept).
    pub window_seconds: u64,
    pub recent_count: u64,
    pub recent_errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One schedule, for `GET /_dispatcher/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleView {
    pub function: String,
    pub schedule: String,
    pub cron: String,
    pub timezone: String,
    /// The next fire times, in the schedule's time zone (RFC 3339 with its offset).
    pub next: Vec<String>,
    /// Its recent attempts, newest first.
    pub runs: Vec<RunRecord>,
}

/// Where a scheduled fire, or one attempt of it, stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireStatus {
    Running,
    Succeeded,
    Failed,
    /// Not run: the previous run was still going (`overlap = "skip"`).
    Skipped,
    /// Its replica stopped mid-run; another replica took the fire over.
    Lost,
}

impl FireStatus {
    /// The name stored in the platform database and printed by `dispatcher runs`.
    pub fn as_str(self) -> &'static str {
        match self {
            FireStatus::Running => "running",
            FireStatus::Succeeded => "succeeded",
            FireStatus::Failed => "failed",
            FireStatus::Skipped => "skipped",
            FireStatus::Lost => "lost",
        }
    }

    /// The status of a stored name; `None` for a name this version does not know.
    pub fn parse(s: &str) -> Option<FireStatus> {
        [
            FireStatus::Running,
            FireStatus::Succeeded,
            FireStatus::Failed,
            FireStatus::Skipped,
            FireStatus::Lost,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

impl std::fmt::Display for FireStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of a scheduled run, for `dispatcher runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub function: String,
    pub schedule: String,
    pub fire_time: String,
    pub attempt: u32,
    pub status: FireStatus,
    pub replica: String,
    pub started_at: String,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    /// The attempt's invocation id (`REQUEST_ID` in the guest, on its log lines).
    #[serde(default)]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            FireStatus::Running,
            FireStatus::Succeeded,
            FireStatus::Failed,
            FireStatus::Skipped,
            FireStatus::Lost,
        ] {
            assert_eq!(FireStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(FireStatus::parse("exploded"), None);
        for a in [
            Action::Deployed,
            Action::Unchanged,
            Action::RolledBack,
            Action::Removed,
        ] {
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
        }
    }

    #[test]
    fn an_error_body_omits_what_its_kind_does_not_need() {
        let e = ErrorBody {
            error: "not_found".into(),
            message: "no".into(),
            ..ErrorBody::default()
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":"not_found","function":null,"message":"no"}"#
        );
    }
}
