//! The card number. [`Pan`] cannot print itself in clear: `Display` and `Debug` show the first six
//! and last four digits only, so a PAN that reaches a log line, an error or a journal record
//! through formatting is masked by construction. The clear digits are reached only through
//! [`Pan::expose`], which is easy to find in review.

use std::fmt;

/// A primary account number: 12 to 19 digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pan {
    digits: [u8; 19],
    len: u8,
}

/// Why a byte string is not a card number (carries no digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    #[error("card number has {0} digits, expected 12 to 19")]
    Length(usize),
    #[error("card number has a non-digit at position {0}")]
    NonDigit(usize),
}

impl Pan {
    pub fn parse(text: &[u8]) -> Result<Pan, PanError> {
        if !(12..=19).contains(&text.len()) {
            return Err(PanError::Length(text.len()));
        }
        if let Some(i) = text.iter().position(|b| !b.is_ascii_digit()) {
            return Err(PanError::NonDigit(i));
        }
        let mut digits = [0u8; 19];
        digits[..text.len()].copy_from_slice(text);
        Ok(Pan {
            digits,
            len: text.len() as u8, // ok: at most 19
        })
    }

    /// The PAN from track 2 data: the digits before the separator.
    pub fn from_track2(track: &[u8]) -> Result<Pan, PanError> {
        let end = track
            .iter()
            .position(|&b| b == b'=' || b == b'D')
            .unwrap_or(track.len());
        Pan::parse(&track[..end])
    }

    /// The clear digits. Use only to relay the card upstream or to key a lookup.
    pub fn expose(&self) -> &str {
        // ok: only ASCII digits are ever stored
        std::str::from_utf8(&self.digits[..usize::from(self.len)]).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first six digits (the BIN / IIN).
    pub fn bin(&self) -> &str {
        &self.expose()[..6]
    }

    /// First six and last four digits, the rest as `*`.
    pub fn masked(&self) -> String {
        mask_digits(self.expose())
    }
}

/// Mask a card-number-like string: first 6 and last 4 kept, the rest `*`; shorter than 11
/// characters, everything but the last 4 is masked.
pub fn mask_digits(clear: &str) -> String {
    let n = clear.chars().count();
    let keep_head = if n > 10 { 6 } else { 0 };
    clear
        .chars()
        .enumerate()
        .map(|(i, c)| if i < keep_head || i + 4 >= n { c } else { '*' })
        .collect()
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_masked_only() {
        let pan = Pan::parse(b"9410000000000013").unwrap();
        assert_eq!(pan.to_string(), "941000******0013");
        assert_eq!(format!("{pan:?}"), "Pan(941000******0013)");
        assert_eq!(format!("{pan:>30}").trim(), "941000******0013");
        assert_eq!(pan.expose(), "9410000000000013");
        assert_eq!(pan.bin(), "941000");
    }

    #[test]
    fn rejects_bad_numbers_without_echoing_them() {
        assert_eq!(Pan::parse(b"12345"), Err(PanError::Length(5)));
        let e = Pan::parse(b"94100000000000X3").unwrap_err();
        assert_eq!(e.to_string(), "card number has a non-digit at position 14");
        assert_eq!(
            Pan::from_track2(b"9410000000000013=2512101").unwrap().bin(),
            "941000"
        );
    }
}
