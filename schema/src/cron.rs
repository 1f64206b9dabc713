//! CronJob schedules: the five-field cron syntax Kubernetes accepts (robfig/cron's
//! standard parser: ranges, steps, lists, month and weekday names, `@hourly`-style
//! descriptors and `@every <duration>`), parsed once, and the next time a schedule fires
//! after a given instant in a time zone. Validation and the CronJob controller share it.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Fields(Fields),
    /// `@every 1h30m`: fixed intervals, in whole seconds.
    Every(i64),
}

/// One bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Day-of-month or day-of-week was `*`/`?`: both must match (else either may).
    day_star: bool,
}

const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn atoi(x: &str) -> String {
    format!("failed to parse int from {x}: strconv.Atoi: parsing \"{x}\": invalid syntax")
}

/// Parses one field into its bitmask; `star` says whether it began with `*` or `?`.
fn field(f: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (r, Some(st)),
            None => (part, None),
        };
        let step = match step {
            Some(st) => match st.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => return Err(atoi(st)),
            },
            None => 1,
        };
        let num = |x: &str| -> Result<u32, String> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(x)) {
                return Ok(i as u32 + name_base);
            }
            x.parse::<u32>().map_err(|_| atoi(x))
        };
        let (a, b) = if range == "*" || range == "?" {
            star = true;
            (lo, hi)
        } else {
            match range.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                // "5/15" runs from 5 to the end, as robfig reads it.
                None => {
                    let a = num(range)?;
                    (a, if part.contains('/') { hi } else { a })
                }
            }
        };
        if a < lo {
            return Err(format!("beginning of range ({a}) below minimum ({lo}): {part}"));
        }
        if b > hi {
            return Err(format!("end of range ({b}) above maximum ({hi}): {part}"));
        }
        if a > b {
            return Err(format!("beginning of range ({a}) beyond end of range ({b}): {part}"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

/// "1h30m", "90s", "2m": the Go durations `@every` takes, to whole seconds.
fn go_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty() && total >= 1.0).then_some(total as i64)
}

pub fn parse(s: &str) -> Result<Schedule, String> {
    let s = s.trim();
    if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if let Some(d) = s.strip_prefix('@') {
        let std = match d {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                if let Some(dur) = d.strip_prefix("every ") {
                    return go_duration(dur.trim()).map(Schedule::Every).ok_or_else(|| format!("failed to parse duration {s}: time: invalid duration \"{}\"", dur.trim()));
                }
                return Err(format!("unrecognized descriptor: {s}"));
            }
        };
        return parse(std);
    }
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {s}", f.len()));
    }
    let (minute, _) = field(f[0], 0, 59, &[], 0)?;
    let (hour, _) = field(f[1], 0, 23, &[], 0)?;
    let (dom, dom_star) = field(f[2], 1, 31, &[], 0)?;
    let (month, _) = field(f[3], 1, 12, MONTHS, 1)?;
    let (dow, dow_star) = field(f[4], 0, 6, DAYS, 0)?;
    Ok(Schedule::Fields(Fields { minute, hour, dom, month, dow, day_star: dom_star || dow_star }))
}

/// The time zone a CronJob names (None: the controller's local zone, UTC here).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None | Some("") | Some("Etc/UTC") | Some("UTC") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| format!("unknown time zone {n}")),
    }
}

fn bit(mask: u64, v: i8) -> bool {
    mask & (1 << v as u32) != 0
}

impl Fields {
    fn day_matches(&self, d: DateTime) -> bool {
        let dom = bit(self.dom, d.day());
        let dow = bit(self.dow, d.weekday().to_sunday_zero_offset());
        if self.day_star { dom && dow } else { dom || dow }
    }

    /// The first civil minute after `t` (exclusive) that the fields allow; robfig's walk:
    /// skip a whole month, day or hour that cannot match instead of every minute in it.
    fn next_civil(&self, t: DateTime) -> Option<DateTime> {
        let mut d = t.checked_add(1.minute()).ok()?.with().second(0).subsec_nanosecond(0).build().ok()?;
        let limit = t.year() + 5;
        while d.year() <= limit {
            if !bit(self.month, d.month()) {
                d = d.first_of_month().checked_add(1.month()).ok()?.with().hour(0).minute(0).build().ok()?;
                continue;
            }
            if !self.day_matches(d) {
                d = d.date().checked_add(1.day()).ok()?.to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !bit(self.hour, d.hour()) {
                d = d.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if !bit(self.minute, d.minute()) {
                d = d.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(d);
        }
        None
    }
}

impl Schedule {
    /// When the schedule next fires strictly after `after`, reading its fields in `tz`.
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(secs) => Timestamp::from_second(after.as_second() + secs).ok(),
            Schedule::Fields(f) => {
                let mut local = tz.to_datetime(after);
                // A civil minute that does not exist (a DST gap) maps forward; one that
                // maps to no later instant than `after` (a repeated hour) is skipped.
                for _ in 0..4 {
                    let d = f.next_civil(local)?;
                    let at = tz.to_ambiguous_timestamp(d).compatible().ok()?;
                    if at > after {
                        return Some(at);
                    }
                    local = d;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_minute_and_steps() {
        let s = parse("*/1 * * * *").unwrap();
        assert_eq!(s.next(at("2026-01-01T10:00:30Z"), &TimeZone::UTC), Some(at("2026-01-01T10:01:00Z")));
        let s = parse("*/15 * * * *").unwrap();
        assert_eq!(s.next(at("2026-01-01T10:01:00Z"), &TimeZone::UTC), Some(at("2026-01-01T10:15:00Z")));
        assert_eq!(s.next(at("2026-01-01T10:45:00Z"), &TimeZone::UTC), Some(at("2026-01-01T11:00:00Z")));
    }

    #[test]
    fn names_days_and_months() {
        // Mondays at 09:30 in March.
        let s = parse("30 9 * mar MON").unwrap();
        assert_eq!(s.next(at("2026-01-01T00:00:00Z"), &TimeZone::UTC), Some(at("2026-03-02T09:30:00Z")));
        // Day of month and day of week both restricted: either matches.
        let s = parse("0 0 13 * 5").unwrap();
        assert_eq!(s.next(at("2026-02-01T00:00:00Z"), &TimeZone::UTC), Some(at("2026-02-06T00:00:00Z")));
        assert_eq!(parse("@hourly").unwrap(), parse("0 * * * *").unwrap());
        let leap = parse("0 0 29 2 *").unwrap();
        assert_eq!(leap.next(at("2026-03-01T00:00:00Z"), &TimeZone::UTC), Some(at("2028-02-29T00:00:00Z")));
    }

    #[test]
    fn time_zones_move_the_hour() {
        let tz = time_zone(Some("America/New_York")).unwrap();
        let s = parse("0 9 * * *").unwrap();
        // 09:00 in New York in January is 14:00 UTC.
        assert_eq!(s.next(at("2026-01-05T12:00:00Z"), &tz), Some(at("2026-01-05T14:00:00Z")));
        assert!(time_zone(Some("Mars/Olympus")).unwrap_err().contains("unknown time zone"));
    }

    #[test]
    fn every_takes_go_durations() {
        assert_eq!(parse("@every 1h30m").unwrap(), Schedule::Every(5400));
        assert!(parse("@every soon").is_err());
    }

    #[test]
    fn bad_schedules_say_why_as_kube_does() {
        assert_eq!(parse("* * *").unwrap_err(), "expected exactly 5 fields, found 3: * * *");
        assert_eq!(parse("61 * * * *").unwrap_err(), "end of range (61) above maximum (59): 61");
        assert_eq!(parse("*/0 * * * *").unwrap_err(), "failed to parse int from 0: strconv.Atoi: parsing \"0\": invalid syntax");
        assert!(parse("TZ=UTC * * * * *").unwrap_err().contains("use timeZone field"));
        assert_eq!(parse("@sometimes").unwrap_err(), "unrecognized descriptor: @sometimes");
    }
}
