//! A bank listener (`[[listener]] role = "bank"`, with its `bank` code): banks ask, in real
//! time, whether to accept a deposit to a virtual account, and advise the ones they booked.
//!
//! - 0200/0201, processing code 21xxxx, field 103 = the account, field 4 = the amount →
//!   0210: 00 (paid), 13 (wrong amount), 14 (unknown, unassigned or expired account).
//! - 0220/0221 advice, same fields → 0230/00 always; one that matched nothing is recorded as
//!   a mismatch for the operator.
//! - 0400/0420 (21xxxx) naming a deposit by its RRN (or field 90) → 0410/0430/00: a deposit
//!   that paid an order unpays it (the bank did not book it after all; see
//!   [`super::VirtualAccounts::reverse_deposit`]).
//! - 0800 → 0810 (sign-on, echo); anything else → 12; a deposit without 103 or 4 → 30.
//!
//! Retransmissions: a deposit is known by its RRN (field 37) — what a bank's repeats and its
//! advice of the same deposit carry — or, without one, by fields 32, 41, 11 and 7. A repeat
//! gets the first answer and pays nothing again (see [`super::VirtualAccounts::deposit`]).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::{DepositMsg, VirtualAccounts};
use crate::iso8583::{answer, de, Message, OwnedMessage, ResponseCode, Spec};
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::net::server::{BoxFuture, Service};

pub struct BankService {
    va: Arc<VirtualAccounts>,
    journal: Arc<Journal>,
    name: Arc<str>,
    bank: String,
    spec: Arc<Spec>,
}

impl BankService {
    pub fn new(
        va: Arc<VirtualAccounts>,
        journal: Arc<Journal>,
        name: &str,
        bank: &str,
        spec: Arc<Spec>,
    ) -> BankService {
        BankService {
            va,
            journal,
            name: name.into(),
            bank: bank.to_string(),
            spec,
        }
    }
}

impl Service for BankService {
    fn call(&self, request: Bytes, peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
        let va = self.va.clone();
        let journal = self.journal.clone();
        let name = self.name.clone();
        let bank = self.bank.clone();
        let spec = self.spec.clone();
        Box::pin(async move {
            let msg = match spec.decode(&request) {
                Ok(m) => m,
                Err(e) => {
                    metrics::counter!("cyberswitch_decode_errors_total", "link" => name.to_string(), "reason" => e.label()).increment(1);
                    tracing::warn!(listener = %name, %peer, error = %e, "undecodable bank message");
                    let (partial, _) = spec.decode_partial(&request);
                    return partial
                        .filter(|m| !m.mti().is_response())
                        .and_then(|m| encode(&spec, &answer(&m, ResponseCode::FormatError)))
                        .into_iter()
                        .collect();
                }
            };
            let resp = respond(&va, &journal, &name, &bank, &msg).await;
            encode(&spec, &resp).into_iter().collect()
        })
    }
}

fn encode(spec: &Spec, m: &OwnedMessage) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match spec.encode(m, &mut out) {
        Ok(()) => Some(out.freeze()),
        Err(e) => {
            tracing::error!(error = %e, "bank answer does not encode");
            None
        }
    }
}

async fn respond(
    va: &VirtualAccounts,
    journal: &Journal,
    listener: &str,
    bank: &str,
    msg: &Message<'_>,
) -> OwnedMessage {
    let mti = msg.mti();
    if mti.is_response() {
        return answer(msg, ResponseCode::InvalidTransaction);
    }
    if mti.class() == 8 {
        return crate::switch::netmgmt::handle(msg);
    }
    if mti.class() == 4 && msg.transaction_type() == Some(21) {
        return reversal(va, journal, listener, msg).await;
    }
    if mti.class() != 2 || msg.transaction_type() != Some(21) {
        return answer(msg, ResponseCode::InvalidTransaction);
    }
    let advice = mti.as_str().starts_with("022");
    let account = msg
        .str(de::ACCOUNT_2)
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    let (Some(account), Some(amount)) = (account, msg.amount()) else {
        return answer(msg, ResponseCode::FormatError);
    };
    let rrn = msg
        .rrn()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let key = deposit_key(msg, rrn.as_deref());
    let request = msg.to_owned_message();
    let d = DepositMsg {
        listener: listener.to_string(),
        bank: bank.to_string(),
        mti: mti.as_str().to_string(),
        advice,
        key: key.clone(),
        account: account.clone(),
        amount,
        stan: msg.stan(),
        rrn,
        request: Entry::message(
            EntryKind::In,
            &format!("va/deposit/{key}"),
            listener,
            &request,
        ),
    };
    let code = match va.deposit(&d).await {
        Ok(c) => c,
        Err(e) => {
            // Nothing was decided (the step did not land): the bank may ask again.
            tracing::error!(error = %e, "virtual accounts: deposit not recorded: 96");
            ResponseCode::SystemMalfunction
        }
    };
    let mut resp = answer(msg, code);
    resp.set(de::ACCOUNT_2, account.as_bytes());
    if code == ResponseCode::Approved && !advice {
        // The same for every repeat of this deposit.
        let digest = Sha256::digest(key.as_bytes());
        resp.set(de::AUTH_CODE, hex::encode_upper(&digest[..3]).as_bytes());
    }
    journal_answer(journal, listener, &key, &resp);
    resp
}

/// 0400/0420 from the bank: the deposit it names (by RRN, or field 90) is undone.
async fn reversal(
    va: &VirtualAccounts,
    journal: &Journal,
    listener: &str,
    msg: &Message<'_>,
) -> OwnedMessage {
    let rrn = msg
        .rrn()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let key = match (&rrn, msg.original_data()) {
        (Some(r), _) => format!("r-{}", clean(r)),
        (None, Ok(Some(od))) => sequence_key(msg, od.stan, od.transmission_time),
        _ => return answer(msg, ResponseCode::FormatError),
    };
    let request = Entry::message(
        EntryKind::In,
        &format!("va/deposit/{key}"),
        listener,
        &msg.to_owned_message(),
    );
    let code = match va.reverse_deposit(listener, &key, request).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "virtual accounts: reversal not recorded: 96");
            ResponseCode::SystemMalfunction
        }
    };
    let mut resp = answer(msg, code);
    resp.copy_from(msg, de::ACCOUNT_2);
    journal_answer(journal, listener, &key, &resp);
    resp
}

/// The answer in the journal too (buffered: what decided it is synced already).
fn journal_answer(journal: &Journal, listener: &str, key: &str, resp: &OwnedMessage) {
    let mut step = Step::new();
    step.append(Entry::message(
        EntryKind::Out,
        &format!("va/deposit/{key}"),
        listener,
        resp,
    ));
    journal.submit_now(step);
}

fn clean(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What the repeats of one deposit share: its RRN, or fields 32, 41, 11 and 7. Only
/// letters, digits and `-` (it is part of a key).
fn deposit_key(msg: &Message<'_>, rrn: Option<&str>) -> String {
    match rrn {
        Some(r) => format!("r-{}", clean(r)),
        None => sequence_key(
            msg,
            msg.stan().unwrap_or(0),
            msg.transmission_time().unwrap_or(0),
        ),
    }
}

/// A deposit without an RRN: the sending institution and terminal (fields 32, 41) with the
/// STAN and transmission time of the message that first carried it (a reversal names them
/// in field 90).
fn sequence_key(
    msg: &Message<'_>,
    stan: impl std::fmt::Display,
    at: impl std::fmt::Display,
) -> String {
    format!(
        "s-{}-{}-{stan}-{at}",
        clean(&msg.str(de::ACQUIRER_ID).unwrap_or_default()),
        clean(&msg.terminal_id().unwrap_or_default()),
    )
}
