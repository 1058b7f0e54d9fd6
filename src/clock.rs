//! The wall clock, and the wall-clock fields of ISO 8583 messages, in UTC.
//!
//! Flows, the ledger and store-and-forward read the time through a [`Clock`] they are given,
//! so that deterministic tests can set it. Every upstream request carries three time fields:
//! they are written digit by digit rather than through `strftime` patterns, which are parsed
//! again at every call.

use std::sync::Mutex;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Where the time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to: for deterministic tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(at))
    }

    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner())
    }
}

/// Field 7: MMDDhhmmss, now.
pub fn transmission_time() -> String {
    transmission_time_at(&Utc::now())
}

/// Field 7 at `now`.
pub fn transmission_time_at(now: &DateTime<Utc>) -> String {
    two_digits(&[
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
    ])
}

/// Field 12 (1987): hhmmss, now.
pub fn local_time() -> String {
    local_time_at(&Utc::now())
}

/// Field 12 at `now`.
pub fn local_time_at(now: &DateTime<Utc>) -> String {
    two_digits(&[now.hour(), now.minute(), now.second()])
}

/// Field 13: MMDD, now.
pub fn local_date() -> String {
    month_day(&Utc::now())
}

/// Field 13 at `now`.
pub fn local_date_at(now: &DateTime<Utc>) -> String {
    month_day(now)
}

/// Today as YYMMDD, for keys that must change with the business day.
pub fn day() -> String {
    let now = Utc::now();
    two_digits(&[now.year().rem_euclid(100) as u32, now.month(), now.day()]) // ok: 0..100
}

fn month_day(t: &DateTime<Utc>) -> String {
    two_digits(&[t.month(), t.day()])
}

/// Each value (0–99) as two digits.
fn two_digits(values: &[u32]) -> String {
    let mut s = String::with_capacity(values.len() * 2);
    for v in values {
        debug_assert!(*v < 100, "{v} does not fit two digits");
        s.push(char::from(b'0' + (v / 10 % 10) as u8)); // ok: a digit
        s.push(char::from(b'0' + (v % 10) as u8)); // ok: a digit
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_have_their_lengths_and_agree_with_strftime() {
        assert_eq!(transmission_time().len(), 10);
        assert_eq!(local_time().len(), 6);
        assert_eq!(local_date().len(), 4);
        assert_eq!(day().len(), 6);
        let t = DateTime::parse_from_rfc3339("2026-01-09T07:05:03Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(month_day(&t), t.format("%m%d").to_string());
        assert_eq!(
            two_digits(&[t.month(), t.day(), t.hour(), t.minute(), t.second()]),
            "0109070503"
        );
    }
}
