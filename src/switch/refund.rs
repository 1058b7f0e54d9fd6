//! F8 refunds: a 0200 with a refund processing code (20xxxx) names an earlier purchase of this
//! switch — by field 90, by tag `OR` (its RRN) or by tag `OA` (`approval code|YYMMDD`), from
//! the terminal it was made at — and gives money back over that purchase's legs:
//!
//! - each leg gives back at most what it took less what earlier refunds gave back (13 when
//!   the refund is more than the purchase has left); partial refunds add up;
//! - the order a partial refund follows is configured (`[refunds] order`, and per issuer
//!   `refund_priority`): by default the credit leg first, then the wallets in reverse drain
//!   order (the last wallet drained is the first refilled);
//! - every leg goes back where it came from: a 0200/20 naming the original leg in field 90
//!   to its acquirer, remote issuer or hosted program, in the wallet's own units;
//! - a refund leg that gets no answer is not undone: it is pushed through as an advice (0220,
//!   0221 repeats) until acknowledged, and counts as given; a leg that is declined undoes
//!   the refund legs given before it, and the terminal gets the decline;
//! - the refund and what it gave back of each original leg land in one synced step with the
//!   answer; the original is held meanwhile, so refunds and reversals of one purchase go one
//!   at a time. An unknown original is answered 25 and never relayed as a plain credit; a
//!   reversed one (or one that is not an approved purchase) 12. The 0210 lists every leg
//!   given back in `LG`;
//! - `OR` and `OA` may name several transactions (approval codes repeat across hosts): the
//!   refund's card, if it carries one, picks among them; otherwise it is answered 25, never
//!   given to a guess;
//! - a refund leg's approval that comes after its timeout stands (its advice says the same):
//!   it is not reversed as a late debit is (`saf/late.rs`).

use crate::config::RefundOrder;
use crate::iso8583::tags::{reference, Reference};
use crate::iso8583::tlv::SwitchData;
use crate::iso8583::{
    answer, de, response::answer_relaying, Message, Mti, OriginalData, OwnedMessage, ResponseCode,
};
use crate::store::Cf;

use super::registry::TxnId;
use super::txn::{LegOutcome, LegRecord, Txn, TxnRecord, TxnState};
use super::Switch;

/// `YYMMDD` of a transaction made at `at_ms` (UTC) whose terminal sent local date `mmdd`
/// (field 13): the year is the one that puts that date nearest to the moment (a terminal's
/// date near New Year may be the switch's previous or next year).
pub fn yymmdd(at_ms: i64, mmdd: u32) -> String {
    use chrono::Datelike;
    let now = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
    let (month, day) = (mmdd / 100, mmdd % 100);
    let year = match (now.month(), month) {
        (1, 12) => now.year() - 1,
        (12, 1) => now.year() + 1,
        _ => now.year(),
    };
    format!("{:02}{month:02}{day:02}", year.rem_euclid(100))
}

/// What a refund's reference names.
enum Named {
    /// One transaction, by its key.
    One(String),
    /// None this switch knows.
    Unknown,
    /// Several (an approval code two hosts gave at one terminal on one day, say), and the
    /// refund carries no card that tells them apart.
    Several(usize),
}

/// The purchase a refund names. Field 90 names one transaction; `OR` and `OA` are looked up
/// in the reference index, where each key ends with the transaction it names (older keys,
/// which named one transaction each, are read too). When they name several, the refund's card
/// (field 2 or 35), if it carries one, picks among them; otherwise none is picked: refunding
/// a guess gives money back on a purchase the merchant did not name.
fn find_original(
    sw: &Switch,
    req: &Message<'_>,
    listener: &str,
    reference: &Reference,
) -> Result<Named, String> {
    let terminal = req.terminal_id().unwrap_or_default().trim().to_string();
    let index_key = match reference {
        Reference::Original(od) => {
            return Ok(Named::One(
                TxnId::original(listener, &terminal, od).record_key(),
            ))
        }
        Reference::Rrn(rrn) => format!("rrn/{terminal}/{rrn}"),
        Reference::Approval { code, date } => format!("auth/{terminal}/{code}/{date}"),
    };
    let txn_of = |v: &[u8]| v.get(8..).map(|k| String::from_utf8_lossy(k).into_owned());
    let mut keys: Vec<String> = sw
        .journal
        .get(Cf::TxnRefs, index_key.as_bytes())?
        .and_then(|v| txn_of(&v))
        .into_iter()
        .collect();
    let prefix = format!("{index_key}/");
    for (_, v) in sw.journal.scan(Cf::TxnRefs, prefix.as_bytes())? {
        keys.extend(txn_of(&v));
    }
    keys.sort();
    keys.dedup();
    if keys.len() > 1 {
        if let Ok(Some(card)) = req.pan() {
            let masked = card.masked();
            keys.retain(|k| {
                matches!(
                    super::followup::load(&sw.journal, k),
                    Ok(Some(r)) if r.summary.as_ref().is_some_and(|s| s.card == masked)
                )
            });
        }
    }
    Ok(match keys.len() {
        0 => Named::Unknown,
        1 => Named::One(keys.remove(0)),
        n => Named::Several(n),
    })
}

pub async fn handle(sw: &Switch, req: &Message<'_>, txn: &mut Txn) -> OwnedMessage {
    let Some(amount) = req.amount().filter(|&a| a > 0) else {
        return answer(req, ResponseCode::InvalidAmount);
    };
    let reference = match reference(req) {
        Ok(r) => r,
        Err(why) => {
            tracing::info!(why, "refund with a bad reference");
            return answer(req, ResponseCode::FormatError);
        }
    };
    let original = match find_original(sw, req, txn.listener(), &reference) {
        Ok(Named::One(key)) => key,
        Ok(Named::Unknown) => return answer(req, ResponseCode::OriginalNotFound),
        Ok(Named::Several(n)) => {
            // 25, "unable to locate the record": not one record. The merchant names the
            // purchase by its RRN, or sends the card.
            tracing::info!(purchases = n, "refund reference names several purchases");
            return answer(req, ResponseCode::OriginalNotFound);
        }
        Err(e) => {
            tracing::error!(error = %e, "refund reference look-up failed");
            return answer(req, ResponseCode::SystemMalfunction);
        }
    };
    let Some(id) = TxnId::from_record_key(&original) else {
        return answer(req, ResponseCode::OriginalNotFound);
    };
    // Refunds and reversals of one purchase go one at a time: what each leg has left is
    // read and written under this hold, which an approved refund keeps until its answer
    // step (holding the original's refunded amounts) has landed — released earlier, a
    // reversal of the purchase could find nothing refunded yet and undo it whole, or a
    // second refund could plan from the amounts before this one.
    let one_at_a_time = sw.registry.hold_owned(&id).await;
    let mut record = match super::followup::load(&sw.journal, &original) {
        Ok(Some(r)) => r,
        Ok(None) => return answer(req, ResponseCode::OriginalNotFound),
        Err(e) => {
            tracing::error!(error = %e, "original of a refund unreadable");
            return answer(req, ResponseCode::SystemMalfunction);
        }
    };
    if record.state == TxnState::Open {
        return answer(req, ResponseCode::OriginalNotFound);
    }
    if !record.is_refundable_purchase() {
        tracing::info!(state = ?record.state, "refund of what is not an approved purchase");
        return answer(req, ResponseCode::InvalidTransaction);
    }
    let Some(plan) = plan(sw, &record, amount) else {
        tracing::info!(amount, "refund above what the purchase has left");
        return answer(req, ResponseCode::InvalidAmount);
    };
    let mut given = Vec::new();
    for (of, share) in plan {
        await_queued_completion(sw, &original, &record.legs[of], of).await;
        match give_back(sw, req, txn, &original, &record.legs[of], of, share).await {
            Ok(g) => {
                given.push(g);
                // A leg given back (or pushed through as an advice) and the refund not
                // answered: recovery must take back what was given.
                super::testhooks::crash_point("refund-leg-given").await;
            }
            Err(code) => {
                // All or nothing: what was given back is taken again.
                for g in &given {
                    txn.reverse_leg(g.index);
                }
                return answer_relaying(req, code.as_bytes());
            }
        }
    }
    for g in &given {
        let leg = &mut record.legs[g.of];
        leg.refunded += g.amount;
        assert!(
            leg.refunded <= leg.amount,
            "a refund gave back more than a leg took"
        );
    }
    txn.refunds(&original, &record);
    txn.keep(Box::new(one_at_a_time));
    // A coupon purchase refunded in full gives the coupon's use back (F18); a partial refund
    // does not (the customer kept part of what the coupon bought).
    if record.legs.iter().all(|l| l.refundable() == 0) {
        let by = txn.key().unwrap_or_default().to_string();
        match crate::coupons::give_back(&sw.journal, &original, &by, sw.clock.now_ms()) {
            Ok(writes) => txn.on_approval(writes),
            Err(e) => tracing::error!(error = %e, "coupon of a refunded purchase unreadable"),
        }
    }
    approved(sw, req, &given)
}

/// An authorization's leg whose completion is queued (the terminal has its 0230, the host
/// may not have the 0220 yet): its refund must reach the host after the completion, or the
/// host finds only a hold and declines it (12). Waits at most the link's timeout; past that,
/// the refund goes and the host answers what it knows.
async fn await_queued_completion(sw: &Switch, original: &str, leg: &LegRecord, of: usize) {
    if leg.state != super::txn::LegState::Completing {
        return;
    }
    let Some(link) = sw.links.get(&leg.link) else {
        return;
    };
    if !sw
        .saf
        .settled(&leg.link, original, of, link.timeout())
        .await
    {
        tracing::warn!(leg = of, link = %leg.link, "refund of a leg whose completion is still queued");
    }
}

/// Which legs of `record` give back `amount`, and how much each: `None` when they have
/// less than that left.
fn plan(sw: &Switch, record: &TxnRecord, amount: u64) -> Option<Vec<(usize, u64)>> {
    let mut order: Vec<usize> = (0..record.legs.len())
        .filter(|&i| record.legs[i].refundable() > 0)
        .collect();
    // Reverse drain order among equals: the leg taken last is given back first.
    order.sort_by_key(|&i| (refund_rank(sw, &record.legs[i]), std::cmp::Reverse(i)));
    let mut left = amount;
    let mut plan = Vec::new();
    for i in order {
        if left == 0 {
            break;
        }
        let share = left.min(record.legs[i].refundable());
        plan.push((i, share));
        left -= share;
    }
    (left == 0).then_some(plan)
}

/// Where a leg comes in a partial refund: its issuer's `refund_priority`, else by the
/// configured order (credit legs are legs on links that are no wallet issuer's).
fn refund_rank(sw: &Switch, leg: &LegRecord) -> u8 {
    let issuer = sw.config.issuers.iter().find(|i| i.link_name() == leg.link);
    let credit_first = sw.config.refunds.order == RefundOrder::CreditFirst;
    match issuer {
        Some(i) => i.refund_priority.unwrap_or(5),
        None if credit_first => 0,
        None => 9,
    }
}

/// A leg given back.
struct Given {
    /// The refund leg's index in the refund transaction.
    index: usize,
    /// The original leg it gives back to.
    of: usize,
    link: String,
    amount: u64,
    units: u64,
    auth: String,
    balance_after: String,
}

/// Give `amount` back on the original's leg `of`: the refund leg is recorded, sent, and
/// its outcome recorded. `Err` is the code the refund is declined with.
#[allow(clippy::too_many_arguments)]
async fn give_back(
    sw: &Switch,
    req: &Message<'_>,
    txn: &mut Txn,
    original: &str,
    leg: &LegRecord,
    of: usize,
    amount: u64,
) -> Result<Given, String> {
    let malfunction = || ResponseCode::SystemMalfunction.as_str().to_string();
    let Some(link) = sw.links.get(&leg.link) else {
        tracing::error!(link = %leg.link, "the link of a leg to refund is not configured");
        return Err(malfunction());
    };
    let taken = match sw
        .journal
        .sealer()
        .open(&leg.sealed.0, original.as_bytes())
        .and_then(|plain| OwnedMessage::unpack(&plain))
    {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "a leg to refund does not open");
            return Err(malfunction());
        }
    };
    let units = amount.saturating_mul(rate_of(sw, &leg.link));
    let mut request = refund_request(sw, req, link.next_stan(), &taken, units);
    if link.is_local() {
        // The hosted ledger knows a leg by its RRN (unique for ever); field 90 names it only
        // by STAN and time, which repeat.
        if let Some(rrn) = taken.get(de::RRN) {
            let mut sd = SwitchData::new();
            sd.push("OR", rrn);
            request.set(de::SWITCH_DATA, sd.as_bytes());
        }
    }
    let of_leg = u32::try_from(of).unwrap_or(u32::MAX);
    match txn.send_refund_leg(link, request, amount, of_leg).await {
        LegOutcome::Approved { index, answer } => Ok(Given {
            index,
            of,
            link: leg.link.clone(),
            amount,
            units,
            auth: super::credit::auth_of(&answer),
            balance_after: crate::iso8583::AdditionalAmount::parse_all(
                answer.get(de::ADDITIONAL_AMOUNTS).unwrap_or_default(),
            )
            .ok()
            .and_then(|b| b.first().map(|x| x.amount.to_string()))
            .unwrap_or_default(),
        }),
        // Pushed through as an advice: given, though not confirmed yet.
        LegOutcome::Unanswered => Ok(Given {
            index: txn.leg_count().saturating_sub(1),
            of,
            link: leg.link.clone(),
            amount,
            units,
            auth: String::new(),
            balance_after: String::new(),
        }),
        LegOutcome::Declined(Some(a)) => Err(text(&a, de::RESPONSE_CODE)),
        LegOutcome::Declined(None) => Err(ResponseCode::IssuerInoperative.as_str().into()),
        LegOutcome::NotRecorded => Err(malfunction()),
        LegOutcome::TooManyLegs => Err(ResponseCode::NotPermitted.as_str().into()),
    }
}

/// Wallet units per currency unit on a link (1 for acquirers and card programs).
fn rate_of(sw: &Switch, link: &str) -> u64 {
    sw.config
        .issuers
        .iter()
        .find(|i| i.link_name() == link)
        .map_or(1, |i| i.units_per_currency_unit.max(1))
}

fn text(m: &OwnedMessage, n: u16) -> String {
    m.get(n)
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .unwrap_or_default()
}

/// The 0200/20 giving `units` back on the leg `taken` (its request as it went upstream):
/// its card or account fields, the refund's terminal and merchant, a new STAN and RRN, and
/// field 90 naming the leg.
fn refund_request(
    sw: &Switch,
    req: &Message<'_>,
    stan: u32,
    taken: &OwnedMessage,
    units: u64,
) -> OwnedMessage {
    let now = sw.clock.now();
    let mut m = OwnedMessage::new(Mti(*b"0200"));
    for n in [de::PAN, 14, 22, 25, de::CURRENCY, de::ACCOUNT_1] {
        if let Some(v) = taken.get(n) {
            m.set(n, v);
        }
    }
    let number = |n: u16| {
        taken
            .get(n)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    m.set(de::PROCESSING_CODE, b"200000")
        .set_number(de::AMOUNT, units, 12)
        .set(
            de::TRANSMISSION_TIME,
            crate::clock::transmission_time_at(&now).as_bytes(),
        )
        .set_number(de::STAN, u64::from(stan), 6)
        .set(de::LOCAL_TIME, crate::clock::local_time_at(&now).as_bytes())
        .set(de::LOCAL_DATE, crate::clock::local_date_at(&now).as_bytes())
        .set(de::RRN, sw.next_rrn().as_bytes())
        .copy_from(req, de::TERMINAL_ID)
        .copy_from(req, de::MERCHANT_ID);
    if !m.has(de::CURRENCY) {
        m.set_number(de::CURRENCY, u64::from(sw.config.currency), 3);
    }
    m.set_original_data(&OriginalData {
        mti: taken.mti(),
        stan: u32::try_from(number(de::STAN)).unwrap_or(0),
        transmission_time: number(de::TRANSMISSION_TIME),
        acquirer_id: 0,
        forwarder_id: 0,
    });
    m
}

/// The approving 0210: every leg given back in `LG`, the last approval code in field 38.
fn approved(sw: &Switch, req: &Message<'_>, given: &[Given]) -> OwnedMessage {
    let mut data = SwitchData::new();
    for g in given {
        let line = leg_line(sw, &g.link, g.amount, g.units, &g.auth, &g.balance_after);
        data.push("LG", line.as_bytes());
    }
    let mut resp = answer(req, ResponseCode::Approved);
    if let Some(auth) = given.iter().rev().map(|g| &g.auth).find(|a| !a.is_empty()) {
        resp.set(de::AUTH_CODE, &super::credit::padded_auth(auth));
    }
    if !data.is_empty() {
        resp.set(de::SWITCH_DATA, data.as_bytes());
    }
    resp
}

/// One `LG` element (SPEC §4.3): `kind|issuer or acquirer|amount|units|auth|00|balance`.
pub(super) fn leg_line(
    sw: &Switch,
    link: &str,
    amount: u64,
    units: u64,
    auth: &str,
    balance_after: &str,
) -> String {
    let issuer = sw.config.issuers.iter().find(|i| i.link_name() == link);
    let (kind, name) = match issuer {
        Some(i) => (i.kind.as_str(), i.id.as_str()),
        None => ("credit", link),
    };
    format!("{kind}|{name}|{amount}|{units}|{auth}|00|{balance_after}")
}

/// The `LG` elements of a reversal's 0410: every leg of the original being undone.
pub(super) fn reversed_legs(sw: &Switch, record: &TxnRecord) -> SwitchData {
    let mut data = SwitchData::new();
    for leg in record
        .legs
        .iter()
        .filter(|l| l.state == super::txn::LegState::Reversing)
    {
        let units = leg.amount.saturating_mul(rate_of(sw, &leg.link));
        let line = leg_line(sw, &leg.link, leg.amount, units, "", "");
        data.push("LG", line.as_bytes());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_year_of_a_terminal_date_is_the_nearest_one() {
        // 2026-12-31 23:00 UTC.
        let new_year_eve = 1_798_758_000_000;
        assert_eq!(yymmdd(new_year_eve, 1231), "261231");
        // The terminal is already in the new year.
        assert_eq!(yymmdd(new_year_eve, 101), "270101");
        // 2027-01-01 01:00 UTC, a terminal still in the old year.
        assert_eq!(yymmdd(new_year_eve + 2 * 3_600_000, 1231), "261231");
        assert_eq!(yymmdd(new_year_eve, 615), "260615");
    }
}
