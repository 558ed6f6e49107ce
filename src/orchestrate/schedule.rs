//! Fire times of time-based triggers, computed from an injected "now" so they
//! can be tested across daylight-saving changes without sleeping.
//!
//! `cron` expressions are read in the trigger's IANA zone (croner does the
//! calendar work): a time that happens twice when clocks go back fires once,
//! at its first occurrence; a time skipped when clocks go forward fires once,
//! at the first instant after the gap. `every` fires at whole multiples of
//! the interval since the Unix epoch (UTC), so `every = "1h"` fires on the
//! hour wherever the scheduler runs.
//!
//! Times are microseconds since the epoch, UTC.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};
use crate::project::{Catchup, Trigger, TriggerKind};

/// Fires older than this when the scheduler looks are "missed" for
/// `catchup = "none"`.
pub const GRACE_US: i64 = 60_000_000;
/// At most this many missed fires are enqueued at once with `catchup = "all"`.
pub const MAX_CATCHUP: usize = 1000;

/// When a time-based trigger fires.
#[derive(Debug, Clone)]
pub enum Timing {
    Cron { cron: Box<croner::Cron>, expr: String, tz: Tz },
    Every { micros: i64, text: String },
}

impl Timing {
    /// The timing of a trigger, or `None` for event triggers.
    pub fn of(t: &Trigger, default_tz: Tz) -> Option<Result<Timing>> {
        match &t.kind {
            TriggerKind::Cron { expr, timezone } => Some((|| {
                let cron = croner::Cron::from_str(&expr.v)
                    .map_err(|e| Error::user(format!("invalid cron expression \"{}\": {e}", expr.v)))?;
                let tz = match timezone {
                    Some(z) => Tz::from_str(&z.v).map_err(|_| Error::user(format!("unknown time zone \"{}\"", z.v)))?,
                    None => default_tz,
                };
                Ok(Timing::Cron { cron: Box::new(cron), expr: expr.v.clone(), tz })
            })()),
            TriggerKind::Every(d) => {
                let micros = d.v.0.as_micros() as i64;
                Some(if micros <= 0 {
                    Err(Error::user("`every` must be longer than zero"))
                } else {
                    Ok(Timing::Every { micros, text: humantime(d.v.0) })
                })
            }
            _ => None,
        }
    }

    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        match self {
            Timing::Every { micros, .. } => Some((t.div_euclid(*micros) + 1) * micros),
            Timing::Cron { cron, tz, .. } => {
                let at = tz.from_utc_datetime(&DateTime::<Utc>::from_timestamp_micros(t)?.naive_utc());
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(next.with_timezone(&Utc).timestamp_micros())
            }
        }
    }

    /// Every fire in `(from, to]`, at most `limit`.
    pub fn fires_between(&self, from: i64, to: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = from;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= to => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }

    /// The zone fire times are shown in.
    pub fn zone(&self) -> Tz {
        match self {
            Timing::Cron { tz, .. } => *tz,
            Timing::Every { .. } => Tz::UTC,
        }
    }

    /// `cron "0 0 * * *" in Europe/Helsinki (At 00:00.)`, `every 30m`.
    pub fn describe(&self) -> String {
        match self {
            Timing::Cron { cron, expr, tz } => format!("cron \"{expr}\" in {tz} ({})", cron.describe()),
            Timing::Every { text, .. } => format!("every {text}"),
        }
    }

    /// A key that changes when the timing changes (a changed schedule starts afresh).
    pub fn key(&self, index: usize) -> String {
        match self {
            Timing::Cron { expr, tz, .. } => format!("{index}:cron:{expr}@{tz}"),
            Timing::Every { micros, .. } => format!("{index}:every:{micros}"),
        }
    }

    /// The logical date of a fire: its calendar date in the trigger's zone.
    pub fn logical_date(&self, fire: i64, default_tz: Tz) -> String {
        let tz = match self {
            Timing::Cron { tz, .. } => *tz,
            Timing::Every { .. } => default_tz,
        };
        DateTime::<Utc>::from_timestamp_micros(fire)
            .map(|d| d.with_timezone(&tz).date_naive().to_string())
            .unwrap_or_default()
    }
}

/// The fires a backfill of `from ..= to` runs: every fire whose logical
/// date (its calendar date in the trigger's zone, see `logical_date`) is in
/// the range, in order, at most `limit`. The range names logical dates, so
/// it means the same whatever the project's zone: a job at 00:30 in
/// Helsinki backfilled for 2026-11-02 ..= 2026-11-04 runs for those three
/// dates, from a project in New York too.
pub fn backfill_fires(
    timing: &Timing,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    default_tz: Tz,
    limit: usize,
) -> Vec<(i64, String)> {
    // Every zone is within a day of UTC: look a day further on each side.
    let edge = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros());
    let (Some(start), Some(end)) = (edge(from - chrono::Days::new(2)), edge(to + chrono::Days::new(2))) else {
        return Vec::new();
    };
    let (first, last) = (from.to_string(), to.to_string());
    let mut out = Vec::new();
    let mut t = start;
    while out.len() < limit {
        let Some(f) = timing.next_after(t).filter(|&f| f <= end) else { break };
        t = f;
        let date = timing.logical_date(f, default_tz);
        if date > last {
            break;
        }
        if date >= first {
            out.push((f, date));
        }
    }
    out
}

/// What the scheduler does when it looks at a trigger at `now` and the next
/// fire it had planned is `next`: the fires to enqueue, and the next planned
/// fire after them.
pub fn due(timing: &Timing, next: i64, now: i64, catchup: Catchup) -> (Vec<i64>, Option<i64>) {
    if next > now {
        return (Vec::new(), Some(next));
    }
    let mut fires = vec![next];
    fires.extend(timing.fires_between(next, now, MAX_CATCHUP));
    let chosen = match catchup {
        Catchup::All => fires,
        Catchup::Latest => fires.last().copied().into_iter().collect(),
        Catchup::None => fires.last().copied().filter(|&f| now - f <= GRACE_US).into_iter().collect(),
    };
    (chosen, timing.next_after(now))
}

/// A duration as `1h30m`, `45s`.
pub fn humantime(d: std::time::Duration) -> String {
    let mut s = d.as_secs();
    let ms = d.subsec_millis();
    if s == 0 {
        return format!("{ms}ms");
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out
}

/// Shows a UTC time in a zone: `2026-03-29 04:30:00 EEST (+03:00)`.
pub fn show_in(t: i64, tz: Tz) -> String {
    match DateTime::<Utc>::from_timestamp_micros(t) {
        Some(d) => d.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z (%:z)").to_string(),
        None => t.to_string(),
    }
}

/// RFC 3339 in UTC: `2026-03-29T01:30:00Z`.
pub fn rfc3339(t: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(t) {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => t.to_string(),
    }
}

/// Parses `2026-03-29`, `2026-03-29T01:30`, `2026-03-29 01:30:00`, with an
/// optional offset or `Z`; a time without an offset is read in `tz`.
pub fn parse_time(s: &str, tz: Tz) -> Result<i64> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc).timestamp_micros());
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)));
    let naive = naive.ok_or_else(|| {
        Error::user(format!("invalid time \"{s}\": expected YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or RFC 3339"))
    })?;
    let local = tz
        .from_local_datetime(&naive)
        .earliest()
        .ok_or_else(|| Error::user(format!("{s} does not exist in {tz} (the clocks skip it)")))?;
    Ok(local.with_timezone(&Utc).timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::tree::{FileId, Loc, Spanned};

    fn loc() -> Loc {
        Loc { file: FileId(0), start: 0, end: 0 }
    }

    fn cron(expr: &str, tz: &str) -> Timing {
        let t = Trigger {
            loc: loc(),
            kind: TriggerKind::Cron {
                expr: Spanned { v: expr.into(), loc: loc() },
                timezone: Some(Spanned { v: tz.into(), loc: loc() }),
            },
            catchup: None,
            poll: None,
        };
        Timing::of(&t, Tz::UTC).unwrap().unwrap()
    }

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc).timestamp_micros()
    }

    /// The fires between two instants, shown in the trigger's zone.
    fn fires(t: &Timing, from: &str, to: &str) -> Vec<String> {
        t.fires_between(at(from), at(to), 100)
            .into_iter()
            .map(|f| DateTime::<Utc>::from_timestamp_micros(f).unwrap().with_timezone(&t.zone()).to_rfc3339())
            .collect()
    }

    #[test]
    fn a_nightly_helsinki_job_fires_once_on_both_change_days() {
        let t = cron("30 0 * * *", "Europe/Helsinki");
        // Spring forward: 2026-03-29 03:00 EET → 04:00 EEST.
        assert_eq!(
            fires(&t, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            vec!["2026-03-28T00:30:00+02:00", "2026-03-29T00:30:00+02:00", "2026-03-30T00:30:00+03:00"]
        );
        // Fall back: 2026-10-25 04:00 EEST → 03:00 EET.
        assert_eq!(
            fires(&t, "2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z"),
            vec!["2026-10-24T00:30:00+03:00", "2026-10-25T00:30:00+03:00", "2026-10-26T00:30:00+02:00"]
        );
    }

    #[test]
    fn helsinki_jobs_in_the_changing_hour_fire_once() {
        // 03:30 does not exist on 2026-03-29: it fires once, at the first
        // instant after the gap.
        let t = cron("30 3 * * *", "Europe/Helsinki");
        assert_eq!(
            fires(&t, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z"),
            vec!["2026-03-29T04:00:00+03:00", "2026-03-30T03:30:00+03:00"]
        );
        // 03:30 happens twice on 2026-10-25: it fires at the first one only.
        assert_eq!(
            fires(&t, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
            vec!["2026-10-25T03:30:00+03:00", "2026-10-26T03:30:00+02:00"]
        );
        // An hourly job runs 23 times on the short day and 25 on the long one
        // (every real hour, once).
        let h = cron("0 * * * *", "Europe/Helsinki");
        assert_eq!(fires(&h, "2026-03-28T22:00:00Z", "2026-03-29T21:00:00Z").len(), 23);
        assert_eq!(fires(&h, "2026-10-24T21:00:00Z", "2026-10-25T22:00:00Z").len(), 25);
    }

    #[test]
    fn new_york_changes_on_its_own_days() {
        // US clocks change on 2026-03-08 and 2026-11-01 at 02:00.
        let t = cron("30 2 * * *", "America/New_York");
        // 02:30 does not exist on 2026-03-08: once, at 03:00 EDT.
        assert_eq!(
            fires(&t, "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z"),
            vec!["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        // 01:30 happens twice on 2026-11-01: once, at the first (EDT).
        let t = cron("30 1 * * *", "America/New_York");
        assert_eq!(
            fires(&t, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z"),
            vec!["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        // A weekday job at 09:00 stays at 09:00 local across the change.
        let w = cron("0 9 * * 1-5", "America/New_York");
        assert_eq!(
            fires(&w, "2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z"),
            vec!["2026-03-06T09:00:00-05:00", "2026-03-09T09:00:00-04:00"]
        );
    }

    #[test]
    fn every_fires_on_whole_multiples_of_the_interval() {
        let t = Timing::Every { micros: 30 * 60 * 1_000_000, text: "30m".into() };
        assert_eq!(t.next_after(at("2026-01-01T10:10:00Z")), Some(at("2026-01-01T10:30:00Z")));
        assert_eq!(t.next_after(at("2026-01-01T10:30:00Z")), Some(at("2026-01-01T11:00:00Z")));
    }

    #[test]
    fn missed_fires_follow_the_catchup_policy() {
        let t = cron("0 * * * *", "UTC");
        let next = at("2026-01-01T10:00:00Z");
        let now = at("2026-01-01T13:00:30Z");
        let all = due(&t, next, now, Catchup::All);
        assert_eq!(
            all.0,
            vec![next, at("2026-01-01T11:00:00Z"), at("2026-01-01T12:00:00Z"), at("2026-01-01T13:00:00Z")]
        );
        assert_eq!(all.1, Some(at("2026-01-01T14:00:00Z")));
        assert_eq!(due(&t, next, now, Catchup::Latest).0, vec![at("2026-01-01T13:00:00Z")]);
        // `none`: the 13:00 fire is 30 s old, so it is not missed; at 13:05 it is.
        assert_eq!(due(&t, next, now, Catchup::None).0, vec![at("2026-01-01T13:00:00Z")]);
        assert!(due(&t, next, at("2026-01-01T13:05:00Z"), Catchup::None).0.is_empty());
        // Nothing due yet.
        assert_eq!(due(&t, at("2026-01-01T14:00:00Z"), now, Catchup::All), (vec![], Some(at("2026-01-01T14:00:00Z"))));
    }

    /// Issue 11, item 16: a backfill's range names logical dates, which are
    /// dates in the trigger's zone, not in the project's.
    #[test]
    fn a_backfill_runs_the_logical_dates_it_names_in_any_project_zone() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        let dates = |t: &Timing, tz: Tz| -> Vec<String> {
            backfill_fires(t, d("2026-11-02"), d("2026-11-04"), tz, 100).into_iter().map(|f| f.1).collect()
        };
        let want = ["2026-11-02", "2026-11-03", "2026-11-04"];
        // 00:30 in Helsinki is 17:30 the day before in New York.
        let early = cron("30 0 * * *", "Europe/Helsinki");
        assert_eq!(dates(&early, ny), want);
        let fires = backfill_fires(&early, d("2026-11-02"), d("2026-11-04"), ny, 100);
        assert_eq!(rfc3339(fires[0].0), "2026-11-01T22:30:00.000Z");
        // 23:00 in New York is the next morning in Helsinki.
        assert_eq!(dates(&cron("0 23 * * *", "America/New_York"), "Europe/Helsinki".parse().unwrap()), want);
        // Hourly: 24 fires a day, each on its own date in the zone (the
        // day US clocks went back, 2026-11-01, is outside the range).
        let hourly =
            backfill_fires(&cron("0 * * * *", "America/New_York"), d("2026-11-02"), d("2026-11-04"), Tz::UTC, 1000);
        assert_eq!(hourly.len(), 72);
        // `every` fires are dated in the project's zone.
        let every = Timing::Every { micros: 86_400_000_000, text: "1d".into() };
        assert_eq!(dates(&every, ny), ["2026-11-02", "2026-11-03", "2026-11-04"]);
    }

    #[test]
    fn times_are_read_in_the_zone() {
        let tz: Tz = "Europe/Helsinki".parse().unwrap();
        assert_eq!(parse_time("2026-01-01", tz).unwrap(), at("2025-12-31T22:00:00Z"));
        assert_eq!(parse_time("2026-07-01 12:00", tz).unwrap(), at("2026-07-01T09:00:00Z"));
        assert_eq!(parse_time("2026-07-01T12:00:00Z", tz).unwrap(), at("2026-07-01T12:00:00Z"));
        assert!(parse_time("2026-03-29 03:30", tz).unwrap_err().to_string().contains("does not exist"));
        assert_eq!(
            cron("0 0 * * *", "Europe/Helsinki").logical_date(at("2026-01-01T22:00:00Z"), Tz::UTC),
            "2026-01-02"
        );
    }
}
