//! Schedule triggers: `[[trigger.schedule]]` in a manifest, parsed into [`ScheduleSpec`], and
//! the pure logic of when they fire.
//!
//! ```toml
//! [[trigger.schedule]]
//! name = "hourly"              # optional, unique within the function; default "default"
//! cron = "0 5 * * * *"         # 6 fields with seconds, or the classic 5
//! timezone = "Europe/Berlin"   # IANA name; default UTC
//! overlap = "skip"             # skip | allow
//! catch_up = "latest"          # none | latest
//! retries = 2                  # extra attempts after a failure, backoff from 1 s
//! payload = '{"kind":"stats"}' # optional; sent on stdin
//! ```

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

/// Most extra attempts a schedule may ask for.
pub const MAX_RETRIES: i64 = 10;
/// Most times [`ScheduleSpec::next_after`] looks at past one not after its instant: a clock
/// going back 2 hours (Antarctica/Troll) repeats at most 7200 fire times of a schedule firing
/// every second.
const MAX_BEHIND: usize = 7202;
/// How far back `catch_up = "latest"` looks for a missed fire.
pub const CATCH_UP_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    name: Option<String>,
    cron: String,
    timezone: Option<String>,
    overlap: Option<String>,
    catch_up: Option<String>,
    retries: Option<i64>,
    payload: Option<String>,
}

/// May a fire start while the schedule's previous run is still going?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    Skip,
    Allow,
}

/// What to do about fires missed while no replica was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    None,
    Latest,
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Unique within the function.
    pub name: String,
    /// The expression as written, for listings.
    pub expression: String,
    /// The parsed expression (6 or 7 fields).
    pub cron: cron::Schedule,
    /// Where the expression is read.
    pub timezone: Tz,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Sent on stdin.
    pub payload: Vec<u8>,
}

impl ScheduleSpec {
    /// Validates one `[[trigger.schedule]]`; errors are `(field, message)`.
    pub fn parse(raw: &RawSchedule, index: usize) -> Result<Self, Vec<(String, String)>> {
        let field = |f: &str| format!("trigger.schedule[{index}].{f}");
        let mut errors = Vec::new();
        let name = raw.name.clone().unwrap_or_else(|| "default".into());
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            errors.push((field("name"), format!("`{name}` is not a valid schedule name: expected 1 to 64 characters of [a-z0-9_-]")));
        }
        let cron = match parse_cron(&raw.cron) {
            Ok(c) => Some(c),
            Err(msg) => {
                errors.push((field("cron"), msg));
                None
            }
        };
        let timezone = match raw.timezone.as_deref() {
            None => Some(Tz::UTC),
            Some(tz) => match Tz::from_str(tz) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    errors.push((field("timezone"), format!("`{tz}` is not a known time zone: expected an IANA name such as \"UTC\" or \"Europe/Berlin\"")));
                    None
                }
            },
        };
        let overlap = match raw.overlap.as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("allow") => Overlap::Allow,
            Some(other) => {
                errors.push((
                    field("overlap"),
                    format!("`{other}` is not an overlap policy: expected \"skip\" or \"allow\""),
                ));
                Overlap::Skip
            }
        };
        let catch_up = match raw.catch_up.as_deref() {
            None | Some("none") => CatchUp::None,
            Some("latest") => CatchUp::Latest,
            Some(other) => {
                errors.push((
                    field("catch_up"),
                    format!("`{other}` is not a catch-up policy: expected \"none\" or \"latest\""),
                ));
                CatchUp::None
            }
        };
        let retries = match raw.retries {
            None => 0,
            Some(n) if (0..=MAX_RETRIES).contains(&n) => n as u32,
            Some(n) => {
                errors.push((
                    field("retries"),
                    format!("{n} is out of range: expected 0 to {MAX_RETRIES}"),
                ));
                0
            }
        };
        match (cron, timezone, errors.is_empty()) {
            (Some(cron), Some(timezone), true) => Ok(ScheduleSpec {
                name,
                expression: raw.cron.clone(),
                cron,
                timezone,
                overlap,
                catch_up,
                retries,
                payload: raw.payload.clone().unwrap_or_default().into_bytes(),
            }),
            _ => Err(errors),
        }
    }

    /// The first fire time strictly after `after`, in UTC.
    ///
    /// The `cron` crate walks wall-clock times, and in the hour that clocks go back its times
    /// are not in order (`01:00 EST`, then `01:30 EDT`, half an hour earlier). A time not
    /// after `after` is skipped, so that the runner never fires backwards; in that hour a
    /// fire of the repeated times can be left out, never run twice or late.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&after.with_timezone(&self.timezone))
            .take(MAX_BEHIND)
            .map(|t| t.with_timezone(&Utc))
            .find(|t| *t > after)
    }

    /// The next `n` fire times after `after`, in the schedule's time zone.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            let Some(next) = self.next_after(t) else {
                break;
            };
            out.push(next.with_timezone(&self.timezone));
            t = next;
        }
        out
    }

    /// The latest fire time in `(now - window, now]`, if any: what `catch_up = "latest"` runs.
    pub fn latest_before(
        &self,
        now: DateTime<Utc>,
        window: chrono::TimeDelta,
    ) -> Option<DateTime<Utc>> {
        let mut t = self.next_after(now - window)?;
        if t > now {
            return None;
        }
        // Step forward; schedules that fire very often are walked in bounded steps.
        let mut steps = 0;
        while let Some(n) = self.next_after(t) {
            if n > now || steps > 200_000 {
                break;
            }
            t = n;
            steps += 1;
        }
        Some(t)
    }
}

/// Parses a cron expression: 6 fields (with seconds) or 7 (with year) as the `cron` crate
/// reads them, or the classic 5 (a `0` seconds field is added).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| {
        format!("`{expr}` is not a valid cron expression ({e}): expected 6 fields \"sec min hour day-of-month month day-of-week\" or the classic 5")
    })
}

/// Backoff before attempt `attempt` (2, 3, ...): 1 s, 2 s, 4 s, ... capped at 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(2).min(8);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn raw(cron: &str, tz: Option<&str>) -> RawSchedule {
        RawSchedule {
            name: None,
            cron: cron.into(),
            timezone: tz.map(Into::into),
            overlap: None,
            catch_up: None,
            retries: None,
            payload: None,
        }
    }

    #[test]
    fn five_and_six_fields() {
        let s = ScheduleSpec::parse(&raw("*/15 * * * *", None), 0).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 30).unwrap();
        assert_eq!(
            s.next_after(t0),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 15, 0).unwrap())
        );
        let s = ScheduleSpec::parse(&raw("* * * * * *", None), 0).unwrap();
        assert_eq!(
            s.next_after(t0),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 31).unwrap())
        );
        assert_eq!(s.name, "default");
    }

    #[test]
    fn time_zones_and_dst() {
        // 02:30 every day in Berlin: on the spring-forward day that local time does not exist.
        let s = ScheduleSpec::parse(&raw("0 30 2 * * *", Some("Europe/Berlin")), 0).unwrap();
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let fires = s.upcoming(before, 2);
        // Every fire is at 02:30 local, whatever the offset; the missing hour is skipped.
        for f in &fires {
            assert_eq!(f.format("%H:%M").to_string(), "02:30");
            assert_ne!(
                f.format("%m-%d").to_string(),
                "03-29",
                "02:30 does not exist that day"
            );
        }
        // In summer, 02:30 Berlin is 00:30 UTC.
        assert_eq!(
            fires[1].with_timezone(&Utc).format("%H:%M").to_string(),
            "00:30"
        );
        // In winter, 02:30 Berlin is 01:30 UTC.
        let jan = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        assert_eq!(
            s.next_after(jan),
            Some(Utc.with_ymd_and_hms(2026, 1, 11, 1, 30, 0).unwrap())
        );
    }

    #[test]
    fn fires_never_go_back_when_clocks_do() {
        // New York's clocks go back at 02:00 EDT on 2017-11-05: 01:00 and 01:30 come twice.
        // The cron crate's next time after 01:00 EST (06:00 UTC) is 01:30 EDT (05:30 UTC);
        // the runner, going from one fire to the next, went back and forth between the two.
        let s = ScheduleSpec::parse(&raw("0 0,30 1 * * *", Some("America/New_York")), 0).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2017, 11, 5, h, m, 0).unwrap();
        let fires: Vec<_> = s.upcoming(at(4, 0), 4).iter().map(|t| t.to_utc()).collect();
        assert_eq!(fires[..2], [at(5, 0), at(5, 30)]);
        assert!(fires.windows(2).all(|w| w[0] < w[1]), "{fires:?}");
        let next = s.next_after(at(6, 0)).unwrap();
        assert!(next > at(6, 0), "{next}");
        // Every 10 s through the repeated hour: each fire later than the one before.
        let s = ScheduleSpec::parse(&raw("*/10 * 1 * * *", Some("America/New_York")), 0).unwrap();
        let mut t = at(4, 59);
        for _ in 0..800 {
            let next = s.next_after(t).unwrap();
            assert!(next > t, "{next} after {t}");
            t = next;
        }
    }

    #[test]
    fn latest_missed_fire() {
        let s = ScheduleSpec::parse(&raw("0 5 * * * *", None), 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 12, 30, 0).unwrap();
        assert_eq!(
            s.latest_before(now, CATCH_UP_WINDOW),
            Some(Utc.with_ymd_and_hms(2026, 5, 1, 12, 5, 0).unwrap())
        );
        let yearly = ScheduleSpec::parse(&raw("0 0 0 1 1 *", None), 0).unwrap();
        assert_eq!(yearly.latest_before(now, CATCH_UP_WINDOW), None);
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = raw("61 * * * * *", Some("Mars/Olympus"));
        r.overlap = Some("sometimes".into());
        r.catch_up = Some("all".into());
        r.retries = Some(11);
        let errs = ScheduleSpec::parse(&r, 2).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "trigger.schedule[2].cron",
                "trigger.schedule[2].timezone",
                "trigger.schedule[2].overlap",
                "trigger.schedule[2].catch_up",
                "trigger.schedule[2].retries"
            ]
        );
        assert!(
            errs[0]
                .1
                .contains("`61 * * * * *` is not a valid cron expression ("),
            "{}",
            errs[0].1
        );
    }

    #[test]
    fn backoff_doubles_from_one_second() {
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(256));
    }
}
