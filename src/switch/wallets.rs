//! F2 balance inquiry and F3/F4/F5 purchases paid from the card's wallets, with any shortfall
//! sent to the acquirer as credit (split tender).
//!
//! Conversion never shortchanges the merchant: a balance of `u` units is worth
//! `floor(u / rate)` in currency, and taking `a` in currency costs `ceil(a * rate)` units.

use futures::future::join_all;

use crate::config::IssuerConfig;
use crate::directory::WalletLink;
use crate::iso8583::tags::tender;
use crate::iso8583::tlv::SwitchData;
use crate::iso8583::{de, AdditionalAmount, Message, Mti, OwnedMessage, Pan};

use super::credit::{self, CreditOutcome};
use super::testhooks::crash_point;
use super::txn::{LegOutcome, Txn};
use super::Switch;
use crate::iso8583::response::answer_relaying;
use crate::iso8583::{answer, ResponseCode};

/// At most this many wallets are reported in field 54 (SPEC §4.3).
const FIELD54_BLOCKS: usize = 6;

/// Currency value of a wallet balance: `floor(units / rate)`.
pub fn value_of(units: i64, rate: u64) -> u64 {
    units.max(0) as u64 / rate.max(1) // ok: non-negative
}

/// Units that pay `amount` in currency: `ceil(amount * rate)`.
pub fn units_for(amount: u64, rate: u64) -> u64 {
    // With an integer rate the product is exact; the ceiling is kept explicit for the rule.
    amount.saturating_mul(rate.max(1))
}

/// A wallet with its issuer's configuration.
struct Wallet<'a> {
    link: &'a WalletLink,
    issuer: Option<&'a IssuerConfig>,
}

/// A debit placed on a wallet.
struct WalletLeg<'a> {
    wallet: &'a Wallet<'a>,
    /// The leg's index in the transaction.
    index: usize,
    amount: u64,
    units: u64,
    auth: String,
    balance_after: Option<i64>,
}

fn resolve<'a>(sw: &'a Switch, links: &'a [WalletLink]) -> Vec<Wallet<'a>> {
    links
        .iter()
        .map(|l| Wallet {
            link: l,
            issuer: sw.config.issuer(&l.issuer),
        })
        .collect()
}

/// A request to a wallet issuer (SPEC §6): inquiry (0100/31) or debit (0200/00).
fn issuer_request(
    sw: &Switch,
    stan: u32,
    req: &Message<'_>,
    mti: &[u8; 4],
    pc: &str,
    account: &str,
    units: u64,
) -> OwnedMessage {
    let now = sw.clock.now();
    let mut m = OwnedMessage::new(Mti(*mti));
    m.set(de::PROCESSING_CODE, pc.as_bytes())
        .set_number(de::AMOUNT, units, 12)
        .set(
            de::TRANSMISSION_TIME,
            crate::clock::transmission_time_at(&now).as_bytes(),
        )
        .set_number(de::STAN, u64::from(stan), 6)
        .set(de::LOCAL_TIME, crate::clock::local_time_at(&now).as_bytes())
        .set(de::LOCAL_DATE, crate::clock::local_date_at(&now).as_bytes())
        .copy_from(req, de::TERMINAL_ID)
        .copy_from(req, de::MERCHANT_ID)
        .set_number(de::CURRENCY, u64::from(sw.config.currency), 3)
        .set(de::ACCOUNT_1, account.as_bytes());
    if mti == b"0200" {
        // Every leg has an RRN of its own, unique for ever: what a hosted issuer knows the
        // leg by (and its reversal carries).
        m.set(de::RRN, sw.next_rrn().as_bytes());
    }
    m
}

/// One balance question and its answer, journaled once the fan-out is over.
type Exchange = (String, OwnedMessage, Option<OwnedMessage>);

/// Ask every wallet's issuer for its balance, in parallel; `None` = unavailable.
async fn balances(
    sw: &Switch,
    req: &Message<'_>,
    txn: &mut Txn,
    wallets: &[Wallet<'_>],
) -> Vec<Option<i64>> {
    let asked: Vec<(Option<i64>, Option<Exchange>)> =
        join_all(wallets.iter().map(|w| balance(sw, req, w))).await;
    asked
        .into_iter()
        .map(|(balance, exchange)| {
            txn.note_exchange(exchange);
            balance
        })
        .collect()
}

async fn balance(
    sw: &Switch,
    req: &Message<'_>,
    w: &Wallet<'_>,
) -> (Option<i64>, Option<Exchange>) {
    let Some(issuer) = w.issuer else {
        return (None, None);
    };
    let Some(link) = sw.links.get(issuer.link_name()) else {
        return (None, None);
    };
    let msg = issuer_request(
        sw,
        link.next_stan(),
        req,
        b"0100",
        "310000",
        &w.link.account,
        0,
    );
    let resp = link.request(msg.clone()).await.ok();
    let balance = resp
        .as_ref()
        .filter(|r| r.code() == Some(ResponseCode::Approved))
        .and_then(|r| AdditionalAmount::parse_all(r.get(de::ADDITIONAL_AMOUNTS)?).ok())
        .and_then(|blocks| {
            blocks
                .iter()
                .find(|b| &b.amount_type == b"02")
                .map(|b| b.amount)
        });
    (balance, Some((issuer.link_name().to_string(), msg, resp)))
}

/// Mask an account id: all but the last four characters.
fn mask_account(account: &str) -> String {
    let n = account.chars().count();
    account
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 4 >= n { c } else { '*' })
        .collect()
}

/// F2: 0110 with one `WL` element per linked wallet and field 54 for the first six available.
pub async fn inquiry(
    sw: &Switch,
    req: &Message<'_>,
    txn: &mut Txn,
    links: &[WalletLink],
) -> OwnedMessage {
    let wallets = resolve(sw, links);
    let found = balances(sw, req, txn, &wallets).await;
    let mut data = SwitchData::new();
    let mut blocks = Vec::new();
    for (w, bal) in wallets.iter().zip(&found) {
        let (kind, unit, rate) = match w.issuer {
            Some(i) => (i.kind.as_str(), i.unit.as_str(), i.units_per_currency_unit),
            None => ("unknown", "", 1),
        };
        let (units, value, status) = match bal {
            Some(u) => (u.to_string(), value_of(*u, rate).to_string(), "ok"),
            None => (String::new(), String::new(), "unavailable"),
        };
        let wl = format!(
            "{}|{}|{kind}|{}|{units}|{unit}|{rate}|{value}|{status}",
            w.link.account,
            w.link.issuer,
            mask_account(&w.link.account)
        );
        data.push("WL", wl.as_bytes());
        if let (Some(u), true) = (bal, blocks.len() < FIELD54_BLOCKS) {
            blocks.push(available(sw, value_of(*u, rate) as i64));
        }
    }
    let mut resp = answer(req, ResponseCode::Approved);
    attach(&mut resp, &data, &blocks);
    resp
}

/// Field 48 elements and field 54 blocks, when there are any.
fn attach(resp: &mut OwnedMessage, data: &SwitchData, blocks: &[AdditionalAmount]) {
    if !data.is_empty() {
        resp.set(de::SWITCH_DATA, data.as_bytes());
    }
    if !blocks.is_empty() {
        resp.set(
            de::ADDITIONAL_AMOUNTS,
            &AdditionalAmount::encode_all(blocks),
        );
    }
}

fn available(sw: &Switch, value: i64) -> AdditionalAmount {
    AdditionalAmount {
        account_type: *b"60",
        amount_type: *b"02",
        currency: sw.config.currency,
        amount: value,
    }
}

/// The wallets to drain, in order.
fn drain_order<'a>(
    wallets: &'a [Wallet<'a>],
    selection: &Option<Vec<String>>,
) -> Result<Vec<&'a Wallet<'a>>, String> {
    match selection {
        Some(ids) => ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                // Named twice, a wallet would be asked twice (a synced leg and two upstream
                // calls each): a malformed selection, not a choice.
                if ids[..i].contains(id) {
                    return Err(format!("wallet {id:?} is selected twice"));
                }
                wallets
                    .iter()
                    .find(|w| &w.link.account == id)
                    .ok_or_else(|| format!("wallet {id:?} is not linked to the card"))
            })
            .collect(),
        None => {
            let mut all: Vec<&Wallet<'_>> = wallets.iter().collect();
            all.sort_by_key(|w| {
                (
                    w.link.priority,
                    w.issuer.map_or(u8::MAX, |i| i.kind.tender_rank()),
                )
            });
            Ok(all)
        }
    }
}

/// The outcome of one debit asked of a wallet.
enum Debit<'a> {
    Approved(WalletLeg<'a>),
    /// The wallet holds less than was asked (51).
    Insufficient,
    /// Declined otherwise, no answer (the leg is being reversed), or not sent.
    Failed,
}

/// Debit `amount` (in currency) from a wallet: the leg is recorded before it is sent.
async fn debit<'a>(
    sw: &Switch,
    req: &Message<'_>,
    txn: &mut Txn,
    w: &'a Wallet<'a>,
    amount: u64,
) -> Debit<'a> {
    let Some(issuer) = w.issuer else {
        return Debit::Failed;
    };
    let Some(link) = sw.links.get(issuer.link_name()) else {
        return Debit::Failed;
    };
    let units = units_for(amount, issuer.units_per_currency_unit);
    let request = issuer_request(
        sw,
        link.next_stan(),
        req,
        b"0200",
        "000000",
        &w.link.account,
        units,
    );
    // Recorded before it is sent (after a crash, recovery knows this leg may hold money);
    // reversed if it gets no answer, and then the next wallet pays.
    match txn.send_leg(link, request, amount).await {
        LegOutcome::Approved { index, answer } => Debit::Approved(WalletLeg {
            wallet: w,
            index,
            amount,
            units,
            auth: credit::auth_of(&answer),
            balance_after: answer
                .get(de::ADDITIONAL_AMOUNTS)
                .and_then(|b| AdditionalAmount::parse_all(b).ok())
                .and_then(|b| b.first().map(|x| x.amount)),
        }),
        LegOutcome::Declined(Some(a)) if a.code() == Some(ResponseCode::InsufficientFunds) => {
            Debit::Insufficient
        }
        _ => Debit::Failed,
    }
}

/// F3/F4/F5: wallet legs in order, then the credit leg for any shortfall.
pub async fn purchase(
    sw: &Switch,
    req: &Message<'_>,
    txn: &mut Txn,
    pan: &Pan,
    links: &[WalletLink],
) -> OwnedMessage {
    let Some(amount) = req.amount() else {
        return answer(req, ResponseCode::FormatError);
    };
    let tender = match tender(req) {
        Ok(t) => t,
        Err(why) => {
            tracing::info!(why, "bad tender data");
            return answer(req, ResponseCode::FormatError);
        }
    };
    // A selection that may need more legs than a transaction may have is refused before
    // any is sent (each wallet is at least one leg).
    let max_legs = sw.config.limits.max_legs;
    if tender
        .selection
        .as_ref()
        .is_some_and(|s| s.len() > max_legs)
    {
        tracing::info!(max_legs, "more wallets selected than legs allowed");
        return answer(req, ResponseCode::NotPermitted);
    }
    let wallets = resolve(sw, links);
    let order = match drain_order(&wallets, &tender.selection) {
        Ok(o) => o,
        Err(why) => {
            tracing::info!(%why, "bad wallet selection");
            return answer(req, ResponseCode::FormatError);
        }
    };
    let mut legs: Vec<WalletLeg<'_>> = Vec::new();
    let mut remaining = amount;
    let mut cap_left = tender.cap.unwrap_or(u64::MAX);
    for w in order {
        if remaining == 0 || cap_left == 0 {
            break;
        }
        // Ask for the whole share first: in the common case the wallet covers it and one
        // round trip is all it costs. Only a wallet short of funds is asked for its balance,
        // then debited for what it holds.
        let share = remaining.min(cap_left);
        let mut leg = debit(sw, req, txn, w, share).await;
        if let Debit::Insufficient = leg {
            let (found, exchange) = balance(sw, req, w).await;
            txn.note_exchange(exchange);
            let rate = w.issuer.map_or(1, |i| i.units_per_currency_unit);
            let take = share.min(found.map_or(0, |u| value_of(u, rate)));
            if take == 0 {
                continue;
            }
            leg = debit(sw, req, txn, w, take).await;
        }
        if let Debit::Approved(leg) = leg {
            remaining -= leg.amount;
            cap_left -= leg.amount;
            legs.push(leg);
        }
    }

    if !legs.is_empty() && remaining > 0 {
        crash_point("wallet-credit").await;
    }
    if remaining == 0 {
        return settle(sw, req, legs, None, amount, false);
    }
    match credit::credit_leg(sw, req, txn, pan, remaining).await {
        CreditOutcome::Approved { link, response } => settle(
            sw,
            req,
            legs,
            Some((link, response, remaining)),
            amount,
            false,
        ),
        outcome => {
            let wallet_total = amount - remaining;
            if tender.partial_ok && wallet_total > 0 {
                return settle(sw, req, legs, None, amount, true);
            }
            for leg in &legs {
                txn.reverse_leg(leg.index);
            }
            match outcome {
                CreditOutcome::Declined(code) => answer_relaying(req, code.as_bytes()),
                CreditOutcome::NoRoute if wallet_total == 0 => {
                    answer(req, ResponseCode::InsufficientFunds)
                }
                _ => answer(req, ResponseCode::IssuerInoperative),
            }
        }
    }
}

/// The approving answer: every leg in `LG`, field 54, and the record for later reversal.
fn settle(
    sw: &Switch,
    req: &Message<'_>,
    legs: Vec<WalletLeg<'_>>,
    credit: Option<(String, OwnedMessage, u64)>,
    requested: u64,
    partial: bool,
) -> OwnedMessage {
    let mut data = SwitchData::new();
    let mut blocks = Vec::new();
    for leg in &legs {
        let issuer = leg.wallet.issuer;
        let after = leg.balance_after.map(|b| b.to_string()).unwrap_or_default();
        let lg = format!(
            "{}|{}|{}|{}|{}|00|{after}",
            issuer.map_or("unknown", |i| i.kind.as_str()),
            leg.wallet.link.issuer,
            leg.amount,
            leg.units,
            leg.auth
        );
        data.push("LG", lg.as_bytes());
        if let (Some(b), Some(i)) = (leg.balance_after, issuer) {
            if blocks.len() < FIELD54_BLOCKS - usize::from(partial) {
                blocks.push(available(sw, value_of(b, i.units_per_currency_unit) as i64));
            }
        }
    }
    let wallet_total: u64 = legs.iter().map(|l| l.amount).sum();
    let mut auth = legs.last().map(|l| l.auth.clone()).unwrap_or_default();
    if let Some((link, response, amount)) = &credit {
        let code = credit::auth_of(response);
        data.push(
            "LG",
            format!("credit|{link}|{amount}|{amount}|{code}|00|").as_bytes(),
        );
        auth = code;
    }
    let approved = wallet_total + credit.as_ref().map_or(0, |c| c.2);
    debug_assert!(
        partial || approved == requested,
        "legs must sum to the amount"
    );
    let mut resp = answer(
        req,
        if partial {
            ResponseCode::PartialApproval
        } else {
            ResponseCode::Approved
        },
    );
    if partial {
        resp.set_number(de::AMOUNT, approved, 12);
        blocks.push(AdditionalAmount {
            account_type: *b"60",
            amount_type: *b"57",
            currency: sw.config.currency,
            amount: requested as i64, // ok: 12 digits
        });
    }
    if !auth.is_empty() {
        resp.set(de::AUTH_CODE, &credit::padded_auth(&auth));
    }
    attach(&mut resp, &data, &blocks);
    resp
}
