//! What the store takes and gives: fire keys, catalog snapshots and histories, and the
//! conversions between the database's times and the API's.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::api::Version;

/// For a (function, schedule) this replica knows: its retries and lease, if it has one.
pub type KnownSchedule<'a> = dyn Fn(&str, &str) -> Option<(u32, Duration)> + Sync + 'a;

/// Identifies one fire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FireKey {
    pub function: String,
    pub schedule: String,
    /// The scheduled time, UTC, microsecond precision.
    pub at: DateTime<Utc>,
}

/// A fire another replica abandoned, taken over by this one.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub id: u64,
    pub key: FireKey,
    /// The attempt this replica now runs.
    pub attempt: u32,
}

/// What a deploy adds.
pub struct NewVersion<'a> {
    pub name: &'a str,
    pub manifest: &'a str,
    pub module_hash: &'a str,
    pub module_size: u64,
    pub source: &'a str,
    pub deployed_by: &'a str,
    pub deployed_at: DateTime<Utc>,
}

/// What is deployed now: the catalog's generation and each function's current version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub current: Vec<Version>,
}

/// One function's history, oldest first, and which version is current (`None`: removed).
#[derive(Debug, Clone)]
pub struct History {
    pub current: Option<u32>,
    pub versions: Vec<Version>,
}

pub(super) fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// A database time as the API shows it: RFC 3339, UTC.
pub fn text(t: NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub(super) fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}
