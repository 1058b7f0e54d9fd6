//! F18 coupon purchases: a 0200 whose field 48 carries a mobile coupon token (tag `CP`)
//! instead of a card (fields 2/35).
//!
//! 1. The token is opened under the coupon keys (forged, altered or another switch's: 14),
//!    its last day checked (54) and its merchant restriction (57: the coupon is genuine, it
//!    is not for this merchant).
//! 2. The coupon is claimed in memory (a purchase in flight with it already: 05) and its
//!    record read: used already, 05; no record, 14.
//! 3. The card the token holds is charged the amount less the discount at its acquirer, an
//!    ordinary credit leg (recorded before it is sent, reversed if it gets no answer). An
//!    amount not above the discount is 13: a coupon purchase always charges the card
//!    something, so it always has a leg the journal and the books know.
//! 4. Approved: the answer carries field 4 = the charged amount and two `LG` elements, the
//!    discount (`coupon|ID|discount|discount|coupon approval number|00|`) and the credit leg.
//!    The coupon's use is written with the step that journals that approval (see
//!    [`Txn::on_approval`]): an answer that is not journaled (96) or not an approval uses
//!    nothing; the claim is held until then, so no second purchase slips in between.
//!
//! A retransmission gets the answer remembered for its key (F10): no second charge, no
//! second use. A reversal of the purchase, or a refund of all it charged, gives the use back
//! in its own step (`followup.rs`, `refund.rs`).

use crate::coupons::{CouponUse, Refused};
use crate::iso8583::response::answer_relaying;
use crate::iso8583::tlv::SwitchData;
use crate::iso8583::{answer, de, Message, OwnedMessage, Pan, ResponseCode};

use super::credit::{credit_leg, padded_auth, CreditOutcome};
use super::txn::Txn;
use super::Switch;

/// The LG kind of a coupon's discount.
pub const DISCOUNT_KIND: &str = "coupon";

/// The coupon token of a request (tag `CP`), if it carries one. A token beside a card
/// field is refused: which one would be charged?
pub fn token(req: &Message<'_>) -> Result<Option<String>, &'static str> {
    let tags = req.switch_data().map_err(|_| "field 48 is malformed")?;
    let mut tokens = tags.into_iter().filter(|(t, _)| t == "CP").map(|(_, v)| v);
    let Some(token) = tokens.next() else {
        return Ok(None);
    };
    if tokens.next().is_some() {
        return Err("more than one coupon");
    }
    if req.has(de::PAN) || req.has(de::TRACK2) {
        return Err("a coupon and a card");
    }
    Ok(Some(token))
}

pub async fn purchase(sw: &Switch, req: &Message<'_>, txn: &mut Txn, token: &str) -> OwnedMessage {
    let tt = req.transaction_type().unwrap_or(99);
    if !sw.config.processing_codes.purchase.contains(&tt) {
        // A coupon pays purchases only (an inquiry or a load with one is not one).
        return answer(req, ResponseCode::InvalidTransaction);
    }
    let merchant = req.merchant_id().unwrap_or_default().trim().to_string();
    let terms = match sw.coupons.verify(token, &merchant) {
        Ok(t) => t,
        Err(Refused::Invalid) => return answer(req, ResponseCode::InvalidCard),
        Err(Refused::Expired) => return answer(req, ResponseCode::ExpiredCard),
        Err(Refused::OtherMerchant) => {
            tracing::info!("coupon restricted to another merchant");
            return answer(req, ResponseCode::NotPermitted);
        }
    };
    let Some(gross) = req.amount() else {
        return answer(req, ResponseCode::FormatError);
    };
    if gross <= terms.discount {
        tracing::info!(gross, "coupon purchase not above the discount");
        return answer(req, ResponseCode::InvalidAmount);
    }
    let Some(claim) = sw.coupons.claim(&terms.id) else {
        tracing::info!(coupon = %terms.id, "coupon in use by a purchase in flight");
        return answer(req, ResponseCode::DoNotHonour);
    };
    let coupon = match sw.coupons.get(&terms.id) {
        Ok(Some(c)) => c,
        Ok(None) => {
            tracing::warn!(coupon = %terms.id, "a genuine token with no coupon record");
            return answer(req, ResponseCode::InvalidCard);
        }
        Err(e) => {
            tracing::error!(error = %e, "coupon record unreadable");
            return answer(req, ResponseCode::SystemMalfunction);
        }
    };
    if coupon.used_by.is_some() {
        tracing::info!(coupon = %coupon.id, "coupon used already");
        return answer(req, ResponseCode::DoNotHonour);
    }
    let Ok(pan) = Pan::parse(terms.card.as_bytes()) else {
        return answer(req, ResponseCode::InvalidCard);
    };
    let Some(key) = txn.key().map(str::to_string) else {
        return answer(req, ResponseCode::FormatError);
    };
    txn.keep(Box::new(claim));
    let charged = gross - terms.discount;
    match credit_leg(sw, req, txn, &pan, charged).await {
        CreditOutcome::Approved { link, response } => {
            let paid = CouponUse {
                coupon: coupon.id.clone(),
                gross,
                discount: terms.discount,
                charged,
                merchant,
            };
            txn.on_approval(sw.coupons.use_writes(&coupon, &key, &paid));
            let auth = super::credit::auth_of(&response);
            let mut data = SwitchData::new();
            let discount = format!(
                "{DISCOUNT_KIND}|{}|{}|{}|{}|00|",
                coupon.id, terms.discount, terms.discount, coupon.auth_code
            );
            data.push("LG", discount.as_bytes());
            let credit = super::refund::leg_line(sw, &link, charged, charged, &auth, "");
            data.push("LG", credit.as_bytes());
            let mut resp = answer(req, ResponseCode::Approved);
            resp.set_number(de::AMOUNT, charged, 12)
                .set(de::SWITCH_DATA, data.as_bytes());
            if !auth.is_empty() {
                resp.set(de::AUTH_CODE, &padded_auth(&auth));
            }
            resp
        }
        CreditOutcome::Declined(code) => answer_relaying(req, code.as_bytes()),
        CreditOutcome::Unanswered => answer(req, ResponseCode::IssuerInoperative),
        CreditOutcome::NoRoute => answer(req, ResponseCode::InvalidCard),
    }
}
