//! The stored forms of the switch's records, and how each is read back: what the journal's
//! database holds, readable without it (tools, and the fuzz targets, which build without the
//! store). Writing and acting on them is the business of the modules that own them.
//!
//! - [`stored`]: the version byte and binary form every record shares.
//! - [`entry`]: journal entries (masked messages, state changes).
//! - [`txn`]: transaction records (legs, answer, refunds), earlier versions included.
//! - [`saf`]: store-and-forward items and dead letters.

pub mod entry;
pub mod saf;
pub mod stored;
pub mod txn;
