//! Typed access to the fields the switch uses, on top of the generic field access.

use std::borrow::Cow;

use super::message::{Message, Mti, OwnedMessage};
use super::pan::{Pan, PanError};
use super::tlv::{self, AsciiTlv, SubfieldError};
use super::wire;

/// Field numbers the switch reads and writes, by name.
pub mod de {
    pub const PAN: u16 = 2;
    pub const PROCESSING_CODE: u16 = 3;
    pub const AMOUNT: u16 = 4;
    pub const TRANSMISSION_TIME: u16 = 7;
    pub const STAN: u16 = 11;
    pub const LOCAL_TIME: u16 = 12;
    pub const LOCAL_DATE: u16 = 13;
    pub const EXPIRY: u16 = 14;
    /// The business date a message belongs to (F13), MMDD.
    pub const SETTLEMENT_DATE: u16 = 15;
    pub const MERCHANT_TYPE: u16 = 18;
    pub const POS_ENTRY_MODE: u16 = 22;
    pub const CARD_SEQUENCE: u16 = 23;
    pub const POS_CONDITION: u16 = 25;
    pub const ACQUIRER_ID: u16 = 32;
    pub const TRACK2: u16 = 35;
    pub const RRN: u16 = 37;
    pub const AUTH_CODE: u16 = 38;
    pub const RESPONSE_CODE: u16 = 39;
    pub const TERMINAL_ID: u16 = 41;
    pub const MERCHANT_ID: u16 = 42;
    pub const MERCHANT_NAME: u16 = 43;
    pub const SWITCH_DATA: u16 = 48;
    pub const CURRENCY: u16 = 49;
    pub const PIN_BLOCK: u16 = 52;
    pub const ADDITIONAL_AMOUNTS: u16 = 54;
    pub const ICC_DATA: u16 = 55;
    pub const NETWORK_CODE: u16 = 70;
    pub const ORIGINAL_DATA: u16 = 90;
    pub const ACCOUNT_1: u16 = 102;
    pub const ACCOUNT_2: u16 = 103;
}

impl<'a> Message<'a> {
    /// Field `n` as text (lossy for non-ASCII bytes).
    pub fn str(&self, n: u16) -> Option<Cow<'a, str>> {
        Some(match self.text(n)? {
            Cow::Borrowed(b) => String::from_utf8_lossy(b),
            Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
        })
    }

    /// The card number from field 2, else from track 2 (field 35). `Ok(None)` when neither
    /// is present.
    pub fn pan(&self) -> Result<Option<Pan>, PanError> {
        if let Some(v) = self.text(de::PAN) {
            return Pan::parse(&v).map(Some);
        }
        match self.text(de::TRACK2) {
            Some(t) => Pan::from_track2(&t).map(Some),
            None => Ok(None),
        }
    }
    pub fn processing_code(&self) -> Option<u32> {
        self.number(de::PROCESSING_CODE).map(|v| v as u32) // ok: six digits
    }
    /// Transaction type: the first two digits of the processing code.
    pub fn transaction_type(&self) -> Option<u8> {
        self.processing_code().map(|p| (p / 10_000) as u8) // ok: < 100
    }
    pub fn amount(&self) -> Option<u64> {
        self.number(de::AMOUNT)
    }
    pub fn stan(&self) -> Option<u32> {
        self.number(de::STAN).map(|v| v as u32) // ok: six digits
    }
    pub fn transmission_time(&self) -> Option<u64> {
        self.number(de::TRANSMISSION_TIME)
    }
    pub fn rrn(&self) -> Option<Cow<'a, str>> {
        self.str(de::RRN)
    }
    pub fn terminal_id(&self) -> Option<Cow<'a, str>> {
        self.str(de::TERMINAL_ID)
    }
    pub fn merchant_id(&self) -> Option<Cow<'a, str>> {
        self.str(de::MERCHANT_ID)
    }
    pub fn response_code(&self) -> Option<Cow<'a, str>> {
        self.str(de::RESPONSE_CODE)
    }
    pub fn currency(&self) -> Option<u16> {
        self.number(de::CURRENCY).map(|v| v as u16) // ok: three digits
    }
    pub fn network_code(&self) -> Option<u16> {
        self.number(de::NETWORK_CODE).map(|v| v as u16) // ok: three digits
    }

    /// The switch's field 48 elements (SPEC §4.3); empty when field 48 is absent.
    pub fn switch_data(&self) -> Result<Vec<(String, String)>, SubfieldError> {
        let Some(raw) = self.text(de::SWITCH_DATA) else {
            return Ok(Vec::new());
        };
        let els: Vec<AsciiTlv<'_>> = tlv::parse_ascii_tlv(&raw, 2, 3)?;
        Ok(els
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(e.tag).into_owned(),
                    String::from_utf8_lossy(e.value).into_owned(),
                )
            })
            .collect())
    }

    /// Field 54 blocks.
    pub fn additional_amounts(&self) -> Result<Vec<AdditionalAmount>, SubfieldError> {
        match self.text(de::ADDITIONAL_AMOUNTS) {
            None => Ok(Vec::new()),
            Some(raw) => AdditionalAmount::parse_all(&raw),
        }
    }

    /// Field 90.
    pub fn original_data(&self) -> Result<Option<OriginalData>, SubfieldError> {
        match self.text(de::ORIGINAL_DATA) {
            None => Ok(None),
            Some(raw) => OriginalData::parse(&raw).map(Some),
        }
    }
}

/// One 20-character block of field 54: account type, amount type, currency, sign, amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdditionalAmount {
    pub account_type: [u8; 2],
    pub amount_type: [u8; 2],
    pub currency: u16,
    /// Minor units; negative for a `D` (debit) sign.
    pub amount: i64,
}

impl AdditionalAmount {
    pub const BLOCK: usize = 20;

    pub fn parse_all(raw: &[u8]) -> Result<Vec<AdditionalAmount>, SubfieldError> {
        if !raw.len().is_multiple_of(Self::BLOCK) {
            return Err(SubfieldError {
                offset: raw.len() - raw.len() % Self::BLOCK,
                reason: "field 54 is not a whole number of 20-character blocks",
            });
        }
        raw.chunks_exact(Self::BLOCK)
            .enumerate()
            .map(|(i, b)| {
                let bad = |off: usize, reason| SubfieldError {
                    offset: i * Self::BLOCK + off,
                    reason,
                };
                let currency =
                    wire::parse_digits(&b[4..7]).ok_or(bad(4, "currency is not numeric"))?;
                let amount =
                    wire::parse_digits(&b[8..20]).ok_or(bad(8, "amount is not numeric"))?;
                let sign = match b[7] {
                    b'C' => 1,
                    b'D' => -1,
                    _ => return Err(bad(7, "sign is neither C nor D")),
                };
                Ok(AdditionalAmount {
                    account_type: [b[0], b[1]],
                    amount_type: [b[2], b[3]],
                    currency: currency as u16,    // ok: three digits
                    amount: sign * amount as i64, // ok: twelve digits
                })
            })
            .collect()
    }

    /// Append this block's 20 characters to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.account_type);
        out.extend_from_slice(&self.amount_type);
        let sign = if self.amount < 0 { 'D' } else { 'C' };
        let amount = self.amount.unsigned_abs().min(999_999_999_999);
        out.extend_from_slice(format!("{:03}{sign}{amount:012}", self.currency % 1000).as_bytes());
    }

    pub fn encode_all(blocks: &[AdditionalAmount]) -> Vec<u8> {
        let mut out = Vec::with_capacity(blocks.len() * Self::BLOCK);
        blocks.iter().for_each(|b| b.write(&mut out));
        out
    }
}

/// Field 90: the original transaction a reversal or advice refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalData {
    pub mti: Mti,
    pub stan: u32,
    pub transmission_time: u64,
    pub acquirer_id: u64,
    pub forwarder_id: u64,
}

impl OriginalData {
    pub fn parse(raw: &[u8]) -> Result<OriginalData, SubfieldError> {
        let bad = |offset, reason| SubfieldError { offset, reason };
        if raw.len() != 42 {
            return Err(bad(0, "field 90 must be 42 digits"));
        }
        let num = |a: usize, b: usize| wire::parse_digits(&raw[a..b]).ok_or(bad(a, "not numeric"));
        Ok(OriginalData {
            mti: Mti::new(&raw[0..4]).ok_or(bad(0, "original MTI is not four digits"))?,
            stan: num(4, 10)? as u32, // ok: six digits
            transmission_time: num(10, 20)?,
            acquirer_id: num(20, 31)?,
            forwarder_id: num(31, 42)?,
        })
    }

    pub fn to_field(&self) -> String {
        format!(
            "{}{:06}{:010}{:011}{:011}",
            self.mti, self.stan, self.transmission_time, self.acquirer_id, self.forwarder_id
        )
    }
}

impl OwnedMessage {
    /// Field 4 as a number (0 when absent or not digits): what a leg asked the host for, in
    /// the host's units.
    pub fn amount_units(&self) -> u64 {
        self.get(de::AMOUNT)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Transaction type: the first two digits of field 3 (`None` when absent or not digits).
    pub fn transaction_type(&self) -> Option<u8> {
        self.get(de::PROCESSING_CODE)
            .and_then(|v| v.get(..2))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse().ok())
    }

    /// Set field 90 from its parts.
    pub fn set_original_data(&mut self, od: &OriginalData) -> &mut Self {
        self.set(de::ORIGINAL_DATA, od.to_field().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additional_amounts_round_trip() {
        let blocks = vec![
            AdditionalAmount {
                account_type: *b"60",
                amount_type: *b"02",
                currency: 410,
                amount: 50_000,
            },
            AdditionalAmount {
                account_type: *b"60",
                amount_type: *b"57",
                currency: 410,
                amount: -7,
            },
        ];
        let raw = AdditionalAmount::encode_all(&blocks);
        assert_eq!(&raw[..20], b"6002410C000000050000");
        assert_eq!(AdditionalAmount::parse_all(&raw).unwrap(), blocks);
        assert!(AdditionalAmount::parse_all(&raw[..19]).is_err());
    }

    #[test]
    fn original_data_round_trip() {
        let od = OriginalData {
            mti: Mti::new(b"0200").unwrap(),
            stan: 123,
            transmission_time: 1121140000,
            acquirer_id: 0,
            forwarder_id: 0,
        };
        let text = od.to_field();
        assert_eq!(text.len(), 42);
        assert_eq!(OriginalData::parse(text.as_bytes()).unwrap(), od);
    }
}
