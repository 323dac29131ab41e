//! `schedules` (the next fire times of each manifest's schedules) and `runs` (the history of
//! scheduled runs in the platform database).

use std::path::Path;

use anyhow::Context;

use super::DbArgs;
use crate::manifest::{self, ManifestErrors};
use crate::store::Store;

/// Prints each schedule with its next 5 fire times, in its time zone.
pub fn schedules(manifests: &Path) -> anyhow::Result<()> {
    let (specs, errors) = manifest::load_dir(manifests, &|k| std::env::var(k).ok());
    if !errors.is_empty() {
        return Err(ManifestErrors(errors).into());
    }
    let now = chrono::Utc::now();
    let mut any = false;
    for spec in &specs {
        for s in &spec.schedules {
            any = true;
            println!(
                "{} / {}  cron \"{}\"  {}  overlap={:?} catch_up={:?} retries={}",
                spec.name, s.name, s.expression, s.timezone, s.overlap, s.catch_up, s.retries
            );
            for t in s.upcoming(now, 5) {
                println!("    {}", t.format("%Y-%m-%d %H:%M:%S %Z (%:z)"));
            }
        }
    }
    if !any {
        println!("no schedules in {}", manifests.display());
    }
    Ok(())
}

/// Prints every attempt, newest first, as a table or JSON.
pub async fn runs(name: Option<&str>, limit: u64, json: bool, db: &DbArgs) -> anyhow::Result<()> {
    let url = db.url().context(
        "the run history lives in the platform database: set DISPATCHER_DB (or DATABASE_URL)",
    )?;
    let store = Store::connect(&url).await?;
    let runs = store.runs(name, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<12} {:<27} {:>3} {:<10} {:>9}  {:<24} {:<24} ERROR",
        "FUNCTION", "SCHEDULE", "FIRE TIME", "#", "STATUS", "MS", "REPLICA", "REQUEST ID"
    );
    for r in runs {
        println!(
            "{:<16} {:<12} {:<27} {:>3} {:<10} {:>9}  {:<24} {:<24} {}",
            r.function,
            r.schedule,
            r.fire_time,
            r.attempt,
            r.status.as_str(),
            r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
            r.replica,
            r.request_id.as_deref().unwrap_or("-"),
            r.error.unwrap_or_default()
        );
    }
    Ok(())
}
