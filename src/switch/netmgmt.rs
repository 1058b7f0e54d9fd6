//! F1: network management from terminals and VAN links.

use crate::iso8583::{de, Message, OwnedMessage};

use crate::iso8583::{answer, ResponseCode};

/// 0800 with field 70 = 001 sign-on, 002 sign-off, 301 echo → 0810 with 39 = 00.
pub fn handle(req: &Message<'_>) -> OwnedMessage {
    let code = match req.network_code() {
        Some(1 | 2 | 301) => ResponseCode::Approved,
        Some(_) => ResponseCode::InvalidTransaction,
        None => ResponseCode::FormatError,
    };
    let mut resp = answer(req, code);
    resp.copy_from(req, de::NETWORK_CODE);
    resp
}
