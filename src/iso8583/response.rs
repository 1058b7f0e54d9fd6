//! The answer vocabulary: the response codes of SPEC §4.2 as a type, and the one way a
//! response is built from its request (response MTI, echoed fields, code). The switch, the
//! hosted hosts and the simulators all answer through it, so a code is spelled in one place.

use std::fmt;

use super::message::{Message, OwnedMessage};

/// Field 39.
const RESPONSE_CODE: u16 = 39;

/// A response code of SPEC §4.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    /// 00
    Approved,
    /// 05
    DoNotHonour,
    /// 10
    PartialApproval,
    /// 12
    InvalidTransaction,
    /// 13
    InvalidAmount,
    /// 14
    InvalidCard,
    /// 25
    OriginalNotFound,
    /// 30
    FormatError,
    /// 51
    InsufficientFunds,
    /// 54
    ExpiredCard,
    /// 55
    IncorrectPin,
    /// 57
    NotPermitted,
    /// 61
    ExceedsLimit,
    /// 62: a hosted card blocked by its program (not in SPEC §4.2's list; ISO 8583's own).
    RestrictedCard,
    /// 68
    TooLate,
    /// 75
    PinTriesExceeded,
    /// 91
    IssuerInoperative,
    /// 94
    Duplicate,
    /// 96
    SystemMalfunction,
}

impl ResponseCode {
    pub const ALL: [ResponseCode; 19] = [
        ResponseCode::Approved,
        ResponseCode::DoNotHonour,
        ResponseCode::PartialApproval,
        ResponseCode::InvalidTransaction,
        ResponseCode::InvalidAmount,
        ResponseCode::InvalidCard,
        ResponseCode::OriginalNotFound,
        ResponseCode::FormatError,
        ResponseCode::InsufficientFunds,
        ResponseCode::ExpiredCard,
        ResponseCode::IncorrectPin,
        ResponseCode::NotPermitted,
        ResponseCode::ExceedsLimit,
        ResponseCode::RestrictedCard,
        ResponseCode::TooLate,
        ResponseCode::PinTriesExceeded,
        ResponseCode::IssuerInoperative,
        ResponseCode::Duplicate,
        ResponseCode::SystemMalfunction,
    ];

    /// The two characters of field 39.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResponseCode::Approved => "00",
            ResponseCode::DoNotHonour => "05",
            ResponseCode::PartialApproval => "10",
            ResponseCode::InvalidTransaction => "12",
            ResponseCode::InvalidAmount => "13",
            ResponseCode::InvalidCard => "14",
            ResponseCode::OriginalNotFound => "25",
            ResponseCode::FormatError => "30",
            ResponseCode::InsufficientFunds => "51",
            ResponseCode::ExpiredCard => "54",
            ResponseCode::IncorrectPin => "55",
            ResponseCode::NotPermitted => "57",
            ResponseCode::ExceedsLimit => "61",
            ResponseCode::RestrictedCard => "62",
            ResponseCode::TooLate => "68",
            ResponseCode::PinTriesExceeded => "75",
            ResponseCode::IssuerInoperative => "91",
            ResponseCode::Duplicate => "94",
            ResponseCode::SystemMalfunction => "96",
        }
    }

    pub const fn as_bytes(self) -> &'static [u8] {
        self.as_str().as_bytes()
    }

    /// The code a field 39 holds, when it is one of SPEC §4.2 (hosts may answer others).
    pub fn parse(raw: &[u8]) -> Option<ResponseCode> {
        ResponseCode::ALL.into_iter().find(|c| c.as_bytes() == raw)
    }

    /// Does a field 39 holding `raw` say this code?
    pub fn is(self, raw: Option<&[u8]>) -> bool {
        raw == Some(self.as_bytes())
    }

    /// 00 or 10: money was approved.
    pub fn is_approval(self) -> bool {
        matches!(self, ResponseCode::Approved | ResponseCode::PartialApproval)
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Does a field 39 holding `raw` approve money (00 or 10)?
pub fn approves(raw: Option<&[u8]>) -> bool {
    raw.and_then(ResponseCode::parse)
        .is_some_and(ResponseCode::is_approval)
}

/// Fields a switch response echoes from its request (SPEC §4.2).
pub const ECHOED: [u16; 10] = [3, 4, 7, 11, 12, 13, 37, 41, 42, 49];

/// Fields an upstream host echoes besides: the card (2), the network code (70), the
/// original data (90) and the account (102), by which the switch matches what it asked.
pub const HOST_ECHOED: [u16; 14] = [2, 3, 4, 7, 11, 12, 13, 37, 41, 42, 49, 70, 90, 102];

/// The response to `req` with the fields in `echoed` copied, no code yet.
pub fn reply(req: &Message<'_>, echoed: &[u16]) -> OwnedMessage {
    let mut resp = OwnedMessage::with_capacity(req.mti().response(), 256);
    for &n in echoed {
        resp.copy_from(req, n);
    }
    resp
}

/// The switch's answer to `req` (SPEC §4.2): response MTI, the echoed fields, the code.
pub fn answer(req: &Message<'_>, code: ResponseCode) -> OwnedMessage {
    let mut resp = reply(req, &ECHOED);
    resp.set_code(code);
    resp
}

/// The switch's answer to `req` carrying a host's own code (an acquirer's decline is relayed
/// to the terminal as the acquirer gave it, whatever its code).
pub fn answer_relaying(req: &Message<'_>, host_code: &[u8]) -> OwnedMessage {
    let mut resp = reply(req, &ECHOED);
    resp.set(RESPONSE_CODE, host_code);
    resp
}

impl OwnedMessage {
    /// Set field 39.
    pub fn set_code(&mut self, code: ResponseCode) {
        self.set(RESPONSE_CODE, code.as_bytes());
    }

    /// Field 39 as one of SPEC §4.2's codes (`None`: absent or another code).
    pub fn code(&self) -> Option<ResponseCode> {
        self.get(RESPONSE_CODE).and_then(ResponseCode::parse)
    }
}

impl Message<'_> {
    /// Field 39 as one of SPEC §4.2's codes (`None`: absent or another code).
    pub fn code(&self) -> Option<ResponseCode> {
        self.response_code()
            .and_then(|c| ResponseCode::parse(c.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_only_approvals_approve() {
        for c in ResponseCode::ALL {
            assert_eq!(ResponseCode::parse(c.as_bytes()), Some(c));
            assert_eq!(c.as_str().len(), 2);
            assert_eq!(
                approves(Some(c.as_bytes())),
                matches!(c.as_str(), "00" | "10")
            );
        }
        assert_eq!(ResponseCode::parse(b"N7"), None);
        assert!(!approves(None));
    }
}
