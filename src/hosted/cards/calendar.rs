//! Card months and local days. Expiry dates are `YYMM` strings, which compare in date
//! order; days (for statements and daily limits) are local calendar days, as the holder
//! sees them.

use chrono::{Datelike, Local, NaiveDate, TimeZone};

/// The current month as `YYMM` (local time), what expiry dates compare with.
pub fn current_yymm() -> String {
    let now = Local::now();
    format!("{:02}{:02}", now.year() % 100, now.month())
}

/// `YYMM` of the month `months` from now.
pub(super) fn expiry_after(months: u32) -> String {
    let now = Local::now();
    let total = now.year() * 12 + now.month0() as i32 + months as i32; // ok: small
    format!("{:02}{:02}", (total / 12) % 100, total % 12 + 1)
}

/// Start and end (ms) of a local calendar day.
pub fn day_bounds(day: NaiveDate) -> (i64, i64) {
    let start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| Local.from_local_datetime(&t).earliest())
            .map_or(0, |t| t.timestamp_millis())
    };
    let next = day.succ_opt().unwrap_or(day);
    (start(day), start(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_yymm() {
        let e = expiry_after(0);
        assert_eq!(e.len(), 4);
        let month: u32 = e[2..].parse().unwrap();
        assert!((1..=12).contains(&month));
        assert!(expiry_after(13) > e);
    }
}
