//! The one time format of every report, and the rounding of durations.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// RFC 3339, UTC, to the second: the one time format of every report.
/// Written digit by digit into the stamp itself: a large run's reports
/// format millions of times, and chrono's general formatter (and then an
/// allocation each) were a tenth of their cost.
pub fn time(t: DateTime<Utc>) -> Stamp {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    // Leap seconds (nanoseconds past 1e9) and years outside 0-9999 are
    // left to chrono.
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        return Stamp::Other(t.to_rfc3339_opts(SecondsFormat::Secs, true).into());
    }
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut two = |at: usize, n: u32| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    let year = year as u32;
    two(0, year / 100);
    two(2, year % 100);
    two(5, t.month());
    two(8, t.day());
    two(11, t.hour());
    two(14, t.minute());
    two(17, t.second());
    Stamp::Short(out)
}

/// A time as the reports write it (see [`time`]); read it as a `str`.
#[derive(Clone, PartialEq, Eq)]
pub enum Stamp {
    /// `YYYY-MM-DDTHH:MM:SSZ`, ASCII.
    Short([u8; 20]),
    Other(Box<str>),
}

impl std::ops::Deref for Stamp {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            // Only ASCII digits and separators are ever written in.
            Stamp::Short(b) => std::str::from_utf8(b).unwrap_or_default(),
            Stamp::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

pub(super) fn opt_time(t: Option<DateTime<Utc>>) -> Option<Stamp> {
    t.map(time)
}

/// Milliseconds are enough, and keep the reports free of float noise.
pub(super) fn seconds(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        for t in [
            Utc.with_ymd_and_hms(2026, 11, 30, 4, 5, 6).unwrap(),
            Utc.with_ymd_and_hms(1999, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(33, 2, 3, 10, 20, 30).unwrap(),
            Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap()
                + chrono::Duration::milliseconds(999),
        ] {
            assert_eq!(*time(t), t.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
    }

    #[test]
    fn seconds_are_rounded_to_milliseconds() {
        assert_eq!(seconds(1.234_567), 1.235);
    }
}
