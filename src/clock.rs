//! Wall-clock fields of ISO 8583 messages, in UTC.

use chrono::Utc;

/// Field 7: MMDDhhmmss.
pub fn transmission_time() -> String {
    Utc::now().format("%m%d%H%M%S").to_string()
}

/// Field 12 (1987): hhmmss.
pub fn local_time() -> String {
    Utc::now().format("%H%M%S").to_string()
}

/// Field 13: MMDD.
pub fn local_date() -> String {
    Utc::now().format("%m%d").to_string()
}

/// Today as YYMMDD, for keys that must change with the business day.
pub fn day() -> String {
    Utc::now().format("%y%m%d").to_string()
}
