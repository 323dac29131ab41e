//! The bench's sections. Each measures one thing against its native baseline, prints its
//! details as it goes, and returns its rows for the closing table.

mod deploy;
mod invoke;
mod orders;
mod replica;
mod schedule;
mod soak;
mod startup;
mod telemetry;
mod throughput;

use crate::artifacts::Artifacts;
use crate::report::Row;

/// One measurement.
pub struct Section {
    /// Chosen on the command line: `cargo run --release -p bench -- NAME`.
    pub name: &'static str,
    /// Printed above its details.
    pub title: &'static str,
    pub run: fn(&Artifacts) -> anyhow::Result<Vec<Row>>,
}

/// Every section, in the order they run. Add new ones here.
pub const ALL: &[Section] = &[
    invoke::SECTION,
    throughput::SECTION,
    startup::SECTION,
    orders::SECTION,
    schedule::SECTION,
    deploy::SECTION,
    replica::SECTION,
    telemetry::SECTION,
];

/// Sections that run only when named (`make soak`): too long for every `make bench`.
pub const ON_REQUEST: &[Section] = &[soak::SECTION];

/// Every section, [`ALL`] first.
pub fn every() -> impl Iterator<Item = &'static Section> {
    ALL.iter().chain(ON_REQUEST)
}
