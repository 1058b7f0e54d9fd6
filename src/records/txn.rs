//! A transaction's stored record (what [`crate::switch::txn`] writes at every step): its legs
//! and where each stands, its answer, what disputes search it by, and what refunds gave back.
//! Records of earlier versions are still read (see [`legacy`]).

use serde::{Deserialize, Serialize};

use crate::iso8583::ResponseCode;
use crate::records::stored;

/// Where a leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegState {
    /// Recorded, request sent or about to be: the outcome upstream is unknown.
    Sent,
    Approved,
    Declined,
    /// No answer in time: it may have been approved.
    Unknown,
    /// Its reversal is in the store-and-forward queue.
    Reversing,
    /// An authorization whose completion is in the store-and-forward queue (its amount is
    /// the completed amount): the money is taken, so a reversal must still undo it.
    Completing,
}

impl LegState {
    /// May this leg have moved money that is not being undone yet?
    pub fn may_hold_money(self) -> bool {
        matches!(
            self,
            LegState::Sent | LegState::Approved | LegState::Unknown | LegState::Completing
        )
    }
}

/// A leg's sealed request, as bytes (records before session 8 held it as hex: twice the
/// size, and encoding it was 1% of the switch's CPU).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Which way a leg moves money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegRole {
    /// A debit or an authorization: takes money from a wallet or a card.
    #[default]
    Take,
    /// A refund leg (F8): gives money back to a wallet or a card.
    Give,
}

/// A leg.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegRecord {
    /// Upstream link.
    pub link: String,
    pub state: LegState,
    /// Amount in currency.
    pub amount: u64,
    /// The leg's request (the fields a reversal needs), sealed: it may hold the card number.
    pub sealed: Sealed,
    #[serde(default)]
    pub role: LegRole,
    /// Of a taking leg: how much of its amount refunds have given back (never above it).
    #[serde(default)]
    pub refunded: u64,
    /// Of a giving leg: the leg of the original purchase it gives back to.
    #[serde(default)]
    pub refunds_leg: Option<u32>,
}

impl LegRecord {
    /// What refunds may still give back of this leg: a taking leg whose money is taken and
    /// not being undone.
    pub fn refundable(&self) -> u64 {
        let taken = matches!(self.state, LegState::Approved | LegState::Completing);
        if self.role != LegRole::Take || !taken {
            return 0;
        }
        self.amount.saturating_sub(self.refunded)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    /// Being processed, not answered.
    Open,
    /// Answered (the code says how).
    Answered,
    /// Reversed by the terminal, or because the approval could not be delivered.
    Reversed,
    /// Found open at start-up: its legs were reversed.
    Recovered,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnRecord {
    pub state: TxnState,
    /// The response code answered (empty while open).
    #[serde(default)]
    pub code: String,
    pub legs: Vec<LegRecord>,
    /// What disputes search by (card masked).
    #[serde(default)]
    pub summary: Option<TxnSummary>,
    /// Of a refund (F8): the key of the purchase it refunds.
    #[serde(default)]
    pub refund_of: Option<String>,
}

/// The searchable face of a transaction: never a card number in clear.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TxnSummary {
    pub mti: String,
    pub card: String,
    pub amount: Option<u64>,
    pub stan: Option<u32>,
    pub terminal: String,
    pub merchant: String,
    pub rrn: String,
    pub at_ms: i64,
    /// The first two digits of field 3 (what the request asked: 00 purchase, 20 refund …).
    #[serde(default)]
    pub transaction_type: Option<u8>,
    /// The approval code answered (field 38), what a refund by `OA` names.
    #[serde(default)]
    pub auth: String,
    /// The business date (F13) the transaction belongs to, `YYYY-MM-DD`.
    #[serde(default)]
    pub business_date: String,
}

impl TxnRecord {
    pub fn approved(&self) -> bool {
        self.state == TxnState::Answered
            && ResponseCode::parse(self.code.as_bytes()).is_some_and(ResponseCode::is_approval)
    }

    /// A stored record: binary (version byte [`stored::V4_TXN`]); records of earlier
    /// versions (see [`legacy`]) are still read.
    pub fn from_bytes(raw: &[u8]) -> Result<TxnRecord, String> {
        let read = match stored::from_bytes_of(stored::V4_TXN, raw) {
            Some(record) => record,
            None => legacy::read(raw),
        };
        read.map_err(|e| format!("corrupt transaction record: {e}"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        stored::to_bytes_of(stored::V4_TXN, self)
    }

    /// Is this a purchase a refund may name: approved, taking money, not a refund itself?
    pub fn is_refundable_purchase(&self) -> bool {
        // A financial request (0200), or an authorization once completed: an authorization
        // still only held is undone by its reversal, not refunded.
        let financial = self
            .summary
            .as_ref()
            .is_some_and(|s| s.mti.starts_with("02"));
        let completed = self.legs.iter().any(|l| l.state == LegState::Completing);
        self.approved()
            && self.refund_of.is_none()
            && (financial || completed)
            && self.legs.iter().any(|l| l.role == LegRole::Take)
    }
}

/// Transaction records as earlier versions wrote them: without refunds and business dates
/// (postcard is positional, so each layout is a type of its own).
mod legacy {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Leg<S> {
        pub(super) link: String,
        pub(super) state: LegState,
        pub(super) amount: u64,
        pub(super) sealed: S,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Summary {
        pub(super) mti: String,
        pub(super) card: String,
        pub(super) amount: Option<u64>,
        pub(super) stan: Option<u32>,
        pub(super) terminal: String,
        pub(super) merchant: String,
        pub(super) rrn: String,
        pub(super) at_ms: i64,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Record<S> {
        pub(super) state: TxnState,
        #[serde(default)]
        pub(super) code: String,
        pub(super) legs: Vec<Leg<S>>,
        #[serde(default)]
        pub(super) summary: Option<Summary>,
    }

    /// `V3_TXN` (seals as bytes), or `V1` binary and JSON (seals as hex).
    pub(super) fn read(raw: &[u8]) -> Result<TxnRecord, String> {
        match stored::from_bytes_of::<Record<Sealed>>(stored::V3_TXN, raw) {
            Some(record) => record.map(convert),
            None => stored::from_bytes::<Record<String>>(raw)
                .unwrap_or_else(|| serde_json::from_slice(raw).map_err(|e| e.to_string()))
                .and_then(|old| {
                    let legs = old
                        .legs
                        .into_iter()
                        .map(|l| {
                            let seal = hex::decode(&l.sealed).map_err(|e| e.to_string())?;
                            Ok(Leg {
                                sealed: Sealed(seal),
                                link: l.link,
                                state: l.state,
                                amount: l.amount,
                            })
                        })
                        .collect::<Result<_, String>>()?;
                    Ok(convert(Record {
                        state: old.state,
                        code: old.code,
                        legs,
                        summary: old.summary,
                    }))
                }),
        }
    }

    fn convert(old: Record<Sealed>) -> TxnRecord {
        TxnRecord {
            state: old.state,
            code: old.code,
            legs: old
                .legs
                .into_iter()
                .map(|l| LegRecord {
                    link: l.link,
                    state: l.state,
                    amount: l.amount,
                    sealed: l.sealed,
                    role: LegRole::Take,
                    refunded: 0,
                    refunds_leg: None,
                })
                .collect(),
            summary: old.summary.map(|s| TxnSummary {
                mti: s.mti,
                card: s.card,
                amount: s.amount,
                stan: s.stan,
                terminal: s.terminal,
                merchant: s.merchant,
                rrn: s.rrn,
                at_ms: s.at_ms,
                ..TxnSummary::default()
            }),
            refund_of: None,
        }
    }
}

/// When a stored transaction began, if it has ended (answered, reversed, recovered): what
/// retention ages it by. An open or unreadable record has no age: it is kept.
pub fn ended_at_ms(raw: &[u8]) -> Option<i64> {
    let record = TxnRecord::from_bytes(raw).ok()?;
    if record.state == TxnState::Open {
        return None;
    }
    record.summary.map(|s| s.at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_earlier_versions_still_read_and_new_ones_keep_refunds() {
        let seal = vec![0x00, 0x9f, 0xff, 0x42, 0x17];
        fn leg<S>(sealed: S) -> legacy::Leg<S> {
            legacy::Leg {
                link: "gift".into(),
                state: LegState::Approved,
                amount: 500,
                sealed,
            }
        }
        fn old<S>(sealed: S) -> legacy::Record<S> {
            legacy::Record {
                state: TxnState::Answered,
                code: "00".into(),
                legs: vec![leg(sealed)],
                summary: None,
            }
        }
        let hex_seals = old(hex::encode(&seal));
        let old_binary = stored::to_bytes(&hex_seals);
        let old_json = serde_json::to_vec(&hex_seals).unwrap();
        let v3 = stored::to_bytes_of(stored::V3_TXN, &old(Sealed(seal.clone())));
        let mut new = TxnRecord::from_bytes(&v3).unwrap();
        new.legs[0].refunded = 200;
        new.refund_of = None;
        for raw in [&old_binary, &old_json, &v3, &new.to_bytes()] {
            let read = TxnRecord::from_bytes(raw).unwrap();
            assert_eq!(read.legs[0].sealed, Sealed(seal.clone()));
            assert_eq!((read.legs[0].amount, read.code.as_str()), (500, "00"));
            assert_eq!(read.legs[0].role, LegRole::Take);
        }
        let read = TxnRecord::from_bytes(&new.to_bytes()).unwrap();
        assert_eq!(read.legs[0].refunded, 200);
        assert_eq!(read.legs[0].refundable(), 300);
        // A damaged hex seal is an error, not a wrong seal.
        let mut bad = hex_seals;
        bad.legs[0].sealed = "zz".into();
        assert!(TxnRecord::from_bytes(&stored::to_bytes(&bad)).is_err());
    }
}
