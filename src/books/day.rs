//! Business dates (F13): which day a moment belongs to, given the cut-over time and zone.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

/// The business date `now` belongs to. A cut-over from noon on closes a day named after the
/// next calendar day (23:30: from 23:30 on the 6th it is the 7th's); one before noon closes
/// the previous calendar day's (01:00: until 01:00 on the 7th it is still the 6th's).
pub fn business_date(now: DateTime<Utc>, cutover: NaiveTime, tz: Tz) -> NaiveDate {
    let local = now.with_timezone(&tz).naive_local();
    let since_cutover = local - (cutover - NaiveTime::MIN);
    let date = since_cutover.date();
    if cutover >= NaiveTime::from_hms_opt(12, 0, 0).unwrap_or(NaiveTime::MIN) {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    }
}

/// Field 15's form: `MMDD`.
pub fn mmdd(date: NaiveDate) -> String {
    let mut out = String::with_capacity(4);
    push_digits(&mut out, date.month(), 2);
    push_digits(&mut out, date.day(), 2);
    out
}

/// The `YYYY-MM-DD` form keys and reports use.
pub fn iso(date: NaiveDate) -> String {
    // By hand: booking keys name their date at every leg, and a strftime pattern is parsed
    // again at every call.
    let Ok(year) = u32::try_from(date.year()) else {
        return date.format("%Y-%m-%d").to_string();
    };
    let mut out = String::with_capacity(10);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, date.month(), 2);
    out.push('-');
    push_digits(&mut out, date.day(), 2);
    out
}

fn push_digits(out: &mut String, value: u32, width: usize) {
    out.extend(
        crate::iso8583::padded_digits(u64::from(value), width)
            .iter()
            .map(|&d| char::from(d)),
    );
}

pub fn parse_iso(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// The date with month and day `mmdd` nearest to `near` (the year before, the same, or the
/// next): field 15 carries no year.
pub fn from_mmdd(mmdd: &str, near: NaiveDate) -> Option<NaiveDate> {
    let month: u32 = mmdd.get(..2)?.parse().ok()?;
    let day: u32 = mmdd.get(2..4)?.parse().ok()?;
    [near.year() - 1, near.year(), near.year() + 1]
        .into_iter()
        .filter_map(|y| NaiveDate::from_ymd_opt(y, month, day))
        .min_by_key(|d| (*d - near).num_days().abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, h, m, 0).unwrap()
    }
    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, day).unwrap()
    }

    #[test]
    fn dates_print_as_chrono_prints_them() {
        for (y, m, d) in [(2026, 12, 7), (1999, 1, 1), (12, 3, 4), (-5, 6, 7)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(iso(date), date.format("%Y-%m-%d").to_string());
            assert_eq!(mmdd(date), date.format("%m%d").to_string());
            if y > 0 {
                assert_eq!(parse_iso(&iso(date)), Some(date));
            }
        }
    }

    #[test]
    fn an_evening_cutover_names_the_day_after_the_next_calendar_day() {
        let seoul = chrono_tz::Asia::Seoul;
        let t = NaiveTime::from_hms_opt(23, 30, 0).unwrap();
        // 14:29 UTC is 23:29 in Seoul: still the 6th's business day; a minute later, the 7th's.
        assert_eq!(business_date(at(14, 29), t, seoul), d(12, 6));
        assert_eq!(business_date(at(14, 31), t, seoul), d(12, 7));
        assert_eq!(business_date(at(1, 0), t, seoul), d(12, 6));
    }

    #[test]
    fn a_morning_cutover_keeps_the_night_in_the_previous_day() {
        let utc = chrono_tz::UTC;
        let t = NaiveTime::from_hms_opt(1, 0, 0).unwrap();
        assert_eq!(business_date(at(0, 30), t, utc), d(12, 5));
        assert_eq!(business_date(at(1, 30), t, utc), d(12, 6));
        let midnight = NaiveTime::MIN;
        assert_eq!(business_date(at(0, 0), midnight, utc), d(12, 6));
    }

    #[test]
    fn field_15_dates_find_their_year() {
        assert_eq!(from_mmdd("1206", d(12, 6)), Some(d(12, 6)));
        assert_eq!(
            from_mmdd("0101", d(12, 31)),
            NaiveDate::from_ymd_opt(2027, 1, 1)
        );
        assert_eq!(
            from_mmdd("1231", NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()),
            Some(d(12, 31))
        );
        assert_eq!(from_mmdd("1340", d(12, 6)), None);
        assert_eq!(from_mmdd("12", d(12, 6)), None);
    }
}
