//! The switch's flows, deterministic: the product's own assembly ([`daemon::assemble`]) on a
//! memory store, every upstream link answered in-process by a scripted host, requests handed
//! to the listener's service as bytes. No socket, no RocksDB, and time is tokio's paused
//! clock: a link timeout or a store-and-forward back-off passes the moment nothing else can
//! run, so a whole suite of timeouts and late answers takes milliseconds.
//!
//! Money is checked where it lives, at the scripted hosts: a wallet debited and then
//! reversed is back where it started.

mod common;

use common::{code, tags, with_tags};
#[path = "flows/scripted.rs"]
mod scripted;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cyberswitch::clock::ManualClock;
use cyberswitch::config::Config;
use cyberswitch::daemon::{self, StandIns};
use cyberswitch::demo::{self, DemoPorts};
use cyberswitch::directory::WalletLink;
use cyberswitch::iso8583::{AdditionalAmount, Mti, OwnedMessage, Pan, Spec};
use cyberswitch::net::link::LocalHost;
use cyberswitch::net::server::Service;
use cyberswitch::store::Store;
use cyberswitch::switch::listener::ListenerService;
use cyberswitch::switch::Switch;
use scripted::{Behaviour, ScriptedHost};
use tokio_util::sync::CancellationToken;

/// The demo's cards and wallets (`demo::DEMO_LINKS`).
const CARD: &str = "9410000000000013"; // GIFT G-3001, then EMONEY E-1001, then MILEAGE M-2001
const SMALL_CARD: &str = "9410000000000039"; // EMONEY E-1002
const SHORT_CARD: &str = "9410000000000054"; // EMONEY E-1003

/// Opening balances, in each issuer's units (mileage points: 2 to the won).
const GIFT: i64 = 50_000;
const EMONEY: i64 = 30_000;
const MILEAGE: i64 = 10_000;
const SMALL: i64 = 5_000;
const SHORT: i64 = 1_000;

/// The demo configuration's link timeout.
const LINK_TIMEOUT: Duration = Duration::from_millis(1_500);

/// A switch assembled as the daemon assembles it, its terminal listener's service, and the
/// scripted hosts behind its four upstream links.
struct Flows {
    switch: Arc<Switch>,
    terminals: ListenerService,
    spec: Arc<Spec>,
    gift: Arc<ScriptedHost>,
    emoney: Arc<ScriptedHost>,
    mileage: Arc<ScriptedHost>,
    acquirer: Arc<ScriptedHost>,
    stop: CancellationToken,
    /// The demo configuration's key files.
    _secrets: tempfile::TempDir,
}

impl Drop for Flows {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn flows() -> Flows {
    flows_with("").await
}

/// As [`flows`], with TOML appended to the demo configuration (a `[limits]` table).
async fn flows_with(extra_toml: &str) -> Flows {
    let secrets = tempfile::tempdir().unwrap();
    demo::write_secrets(secrets.path()).unwrap();
    let text = format!(
        "{}{extra_toml}",
        demo::switch_config_toml(secrets.path(), &DemoPorts::ephemeral())
    );
    let config = Arc::new(Config::from_toml(&text, &secrets.path().join("switch.toml")).unwrap());
    let spec = Arc::new(Spec::resolve("iso87-ascii").unwrap());
    let gift = ScriptedHost::issuer(spec.clone(), &[("G-3001", GIFT)]);
    let emoney = ScriptedHost::issuer(
        spec.clone(),
        &[("E-1001", EMONEY), ("E-1002", SMALL), ("E-1003", SHORT)],
    );
    let mileage = ScriptedHost::issuer(spec.clone(), &[("M-2001", MILEAGE)]);
    let acquirer = ScriptedHost::acquirer(spec.clone());
    let stand_ins: StandIns = [
        ("gift", &gift),
        ("emoney", &emoney),
        ("mileage", &mileage),
        ("acq1", &acquirer),
    ]
    .into_iter()
    .map(|(link, host)| (link.to_string(), host.clone() as Arc<dyn LocalHost>))
    .collect();
    let stop = CancellationToken::new();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-01-09T07:05:03Z")
            .unwrap()
            .to_utc(),
    ));
    let switch = daemon::assemble(config.clone(), Store::memory(), clock, stand_ins, &stop)
        .await
        .unwrap();
    // Nothing on a disk, nothing to connect: a remote link is not up before it connects.
    assert!(switch.journal.store().rocks().is_none());
    assert!(switch.links.values().all(|l| l.is_up()));
    for (card, issuer, account, priority, label) in demo::DEMO_LINKS {
        let link = WalletLink {
            label: label.to_string(),
            ..WalletLink::active(issuer, account, *priority, "test")
        };
        switch
            .directory
            .link(&Pan::parse(card.as_bytes()).unwrap(), link, "test", |_| {
                true
            })
            .unwrap();
    }
    let listener = &config.listeners[0];
    let profile = listener.profile.clone();
    Flows {
        terminals: ListenerService::new(switch.clone(), &listener.name, profile),
        switch,
        spec,
        gift,
        emoney,
        mileage,
        acquirer,
        stop,
        _secrets: secrets,
    }
}

impl Flows {
    /// A terminal's request through the listener's service, as its bytes; the one answer.
    async fn call(&self, request: &OwnedMessage) -> OwnedMessage {
        let mut frame = BytesMut::new();
        self.spec.encode(request, &mut frame).unwrap();
        let answers = self.terminals.call(frame.freeze(), "terminal".into()).await;
        assert_eq!(answers.len(), 1, "one answer per request");
        self.spec.decode(&answers[0]).unwrap().to_owned_message()
    }

    /// Wait (on the paused clock) until the store-and-forward queue is empty.
    async fn drained(&self) {
        let saf = &self.switch.saf;
        until("the store-and-forward queue drains", || saf.depth() == 0).await;
    }

    /// Every wallet's balance, in units: gift, e-money (three accounts), mileage.
    fn wallets(&self) -> [i64; 5] {
        [
            self.gift.balance("G-3001"),
            self.emoney.balance("E-1001"),
            self.emoney.balance("E-1002"),
            self.emoney.balance("E-1003"),
            self.mileage.balance("M-2001"),
        ]
    }
}

/// Every wallet as it opened.
const OPENING: [i64; 5] = [GIFT, EMONEY, SMALL, SHORT, MILEAGE];

/// Let the switch run (the paused clock jumps to its next timer) until `done`; at most ten
/// virtual minutes.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..6_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not after ten minutes");
}

fn request(mti: &[u8; 4], card: &str, pc: &str, amount: u64, stan: u32) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
    m.set(2, card.as_bytes())
        .set(3, pc.as_bytes())
        .set_number(4, amount, 12)
        .set(7, b"0109070503")
        .set_number(11, u64::from(stan), 6)
        .set(12, b"070503")
        .set(13, b"0109")
        .set(41, b"TERM0001")
        .set(42, b"MERCHANT0000001")
        .set(49, b"410");
    m
}

fn purchase(card: &str, amount: u64, stan: u32) -> OwnedMessage {
    request(b"0200", card, "000000", amount, stan)
}

/// Field 54's amounts of one type.
fn amounts(m: &OwnedMessage, amount_type: &[u8; 2]) -> Vec<i64> {
    AdditionalAmount::parse_all(m.get(54).unwrap_or(b""))
        .unwrap()
        .into_iter()
        .filter(|b| &b.amount_type == amount_type)
        .map(|b| b.amount)
        .collect()
}

/// The requests a host got for one account or card: (MTI, amount, STAN, STAN named in
/// field 90).
fn requests(host: &ScriptedHost, target: &str) -> Vec<(String, Option<u64>, u32, Option<u32>)> {
    host.seen_for(target)
        .into_iter()
        .map(|s| (s.mti, s.amount, s.stan, s.original_stan))
        .collect()
}

/// No reversal was sent for `account`.
fn assert_nothing_reversed(host: &ScriptedHost, account: &str) {
    let seen = host.seen_for(account);
    assert!(
        !seen.iter().any(|s| s.is_reversal()),
        "nothing reversed: {seen:?}"
    );
}

/// Each debit a host approved for `target` was reversed, by a reversal naming it.
fn assert_each_debit_reversed(host: &ScriptedHost, target: &str) {
    let seen = host.seen_for(target);
    let debits: Vec<_> = seen
        .iter()
        .filter(|s| s.mti == "0200" && s.answered.as_deref() == Some("00"))
        .collect();
    assert!(!debits.is_empty(), "{target}: no approved debit");
    for d in debits {
        let reversals = seen
            .iter()
            .filter(|s| s.is_reversal() && s.original_stan == Some(d.stan))
            .count();
        assert!(
            reversals >= 1,
            "{target}: debit {} not reversed: {seen:?}",
            d.stan
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_inquiry_lists_every_wallet_and_an_issuer_that_does_not_answer_as_unavailable() {
    let f = flows().await;
    let a = f.call(&request(b"0100", CARD, "310000", 0, 1)).await;
    assert_eq!((a.mti().as_str(), code(&a).as_str()), ("0110", "00"));
    assert_eq!(
        tags(&a, "WL"),
        [
            "G-3001|GIFT|giftcert|**3001|50000|KRW|1|50000|ok",
            "E-1001|EMONEY|emoney|**1001|30000|KRW|1|30000|ok",
            "M-2001|MILEAGE|points|**2001|10000|P|2|5000|ok",
        ]
    );
    assert_eq!(amounts(&a, b"02"), [50_000, 30_000, 5_000]);

    // The mileage issuer goes silent: the inquiry waits out its link's timeout (on the
    // paused clock), and the wallet is unavailable — not a zero balance.
    f.mileage.behave("M-2001", Behaviour::Silent);
    let asked = tokio::time::Instant::now();
    let a = f.call(&request(b"0100", CARD, "310000", 0, 2)).await;
    assert!(
        asked.elapsed() >= LINK_TIMEOUT,
        "answered before the timeout"
    );
    assert_eq!(code(&a), "00");
    assert_eq!(
        tags(&a, "WL")[2],
        "M-2001|MILEAGE|points|**2001||P|2||unavailable"
    );
    assert_eq!(amounts(&a, b"02"), [50_000, 30_000], "no block for it");
    assert_eq!(f.wallets(), OPENING, "an inquiry moves nothing");
}

#[tokio::test(start_paused = true)]
async fn a_purchase_from_chosen_wallets_debits_them_in_the_order_given_and_nothing_else() {
    let f = flows().await;
    // 33,000 = e-money 30,000 + mileage 3,000 (6,000 points); the gift wallet is not chosen.
    let req = with_tags(purchase(CARD, 33_000, 10), &[("WS", "E-1001,M-2001")]);
    let a = f.call(&req).await;
    assert_eq!((a.mti().as_str(), code(&a).as_str()), ("0210", "00"));
    let legs = tags(&a, "LG");
    assert_eq!(legs.len(), 2, "{legs:?}");
    assert!(
        legs[0].starts_with("emoney|EMONEY|30000|30000|"),
        "{legs:?}"
    );
    assert!(legs[1].starts_with("points|MILEAGE|3000|6000|"), "{legs:?}");
    assert_eq!(f.wallets(), [GIFT, 0, SMALL, SHORT, MILEAGE - 6_000]);
    assert!(f.gift.seen().is_empty(), "the gift wallet was not chosen");
    assert!(f.acquirer.seen().is_empty(), "no shortfall, no credit leg");
}

#[tokio::test(start_paused = true)]
async fn automatic_tender_drains_every_wallet_in_priority_order_then_sends_the_shortfall_to_credit()
{
    let f = flows().await;
    // 100,000 = gift 50,000 + e-money 30,000 + mileage 5,000 (10,000 points) + credit 15,000.
    let a = f.call(&purchase(CARD, 100_000, 20)).await;
    assert_eq!(code(&a), "00");
    let legs = tags(&a, "LG");
    assert_eq!(legs.len(), 4, "{legs:?}");
    assert!(
        legs[0].starts_with("giftcert|GIFT|50000|50000|"),
        "{legs:?}"
    );
    assert!(
        legs[1].starts_with("emoney|EMONEY|30000|30000|"),
        "{legs:?}"
    );
    assert!(
        legs[2].starts_with("points|MILEAGE|5000|10000|"),
        "{legs:?}"
    );
    assert!(legs[3].starts_with("credit|acq1|15000|15000|"), "{legs:?}");
    let sum: u64 = legs
        .iter()
        .map(|l| l.split('|').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, 100_000, "the legs sum to the amount");
    assert_eq!(f.wallets(), [0, 0, SMALL, SHORT, 0]);
    assert_eq!(f.acquirer.balance(CARD), 15_000);
    // The mileage issuer held too little for the whole rest: asked for it, then for its
    // balance, then debited for what it holds.
    let mileage: Vec<_> = requests(&f.mileage, "M-2001")
        .into_iter()
        .map(|(mti, amount, ..)| (mti, amount))
        .collect();
    assert_eq!(
        mileage,
        [
            ("0200".to_string(), Some(40_000)),
            ("0100".to_string(), Some(0)),
            ("0200".to_string(), Some(10_000)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_credit_decline_reverses_every_wallet_leg_and_answers_the_acquirers_code() {
    let f = flows().await;
    f.acquirer.behave(CARD, Behaviour::Decline("05"));
    let a = f.call(&purchase(CARD, 100_000, 30)).await;
    assert_eq!(code(&a), "05", "the acquirer's own code");
    assert!(tags(&a, "LG").is_empty());
    f.drained().await;
    for (host, account) in [
        (&f.gift, "G-3001"),
        (&f.emoney, "E-1001"),
        (&f.mileage, "M-2001"),
    ] {
        assert_each_debit_reversed(host, account);
        let acknowledged = host
            .seen_for(account)
            .iter()
            .any(|s| s.is_reversal() && s.answered.as_deref() == Some("00"));
        assert!(acknowledged, "{account}: reversal acknowledged");
    }
    assert_eq!(f.wallets(), OPENING, "every wallet leg undone");
    assert_eq!(f.acquirer.balance(CARD), 0);
}

#[tokio::test(start_paused = true)]
async fn a_credit_timeout_reverses_the_wallet_legs_and_the_credit_leg_itself() {
    let f = flows().await;
    f.acquirer.behave(CARD, Behaviour::Silent);
    let asked = tokio::time::Instant::now();
    let a = f.call(&purchase(CARD, 100_000, 40)).await;
    assert!(asked.elapsed() >= LINK_TIMEOUT);
    assert_eq!(code(&a), "91", "the credit leg's outcome is unknown");
    // The silent acquirer took the authorization; its reversal (0400) goes unanswered too,
    // so the queue repeats it as an advice (0420) until acknowledged.
    let acquirer = &f.acquirer;
    until("the credit leg's reversal is repeated as 0420", || {
        acquirer.seen().iter().any(|s| s.mti == "0420")
    })
    .await;
    assert_ne!(f.switch.saf.depth(), 0, "not acknowledged yet");
    acquirer.behave(CARD, Behaviour::Approve);
    f.drained().await;

    let credit = requests(acquirer, CARD);
    let (auth_stan, auth_amount) = (credit[0].2, credit[0].1);
    assert_eq!((credit[0].0.as_str(), auth_amount), ("0200", Some(15_000)));
    assert_eq!(credit[1].0, "0400");
    assert_eq!(credit[2].0, "0420");
    assert!(
        credit[1..]
            .iter()
            .all(|(mti, _, _, original)| mti.starts_with("04") && *original == Some(auth_stan)),
        "every reversal names the credit leg: {credit:?}"
    );
    assert_eq!(acquirer.balance(CARD), 0, "the authorization is undone");
    for (host, account) in [
        (&f.gift, "G-3001"),
        (&f.emoney, "E-1001"),
        (&f.mileage, "M-2001"),
    ] {
        assert_each_debit_reversed(host, account);
    }
    assert_eq!(f.wallets(), OPENING);
}

#[tokio::test(start_paused = true)]
async fn a_partial_approval_keeps_the_wallet_legs_and_answers_10_with_what_they_paid() {
    let f = flows().await;
    f.acquirer.behave(SHORT_CARD, Behaviour::Decline("51"));
    // E-1003 pays 1,000; the acquirer declines the 4,000 rest; PA=1 takes the 1,000.
    let req = with_tags(purchase(SHORT_CARD, 5_000, 50), &[("PA", "1")]);
    let a = f.call(&req).await;
    assert_eq!(code(&a), "10");
    assert_eq!(
        a.get(4),
        Some(&b"000000001000"[..]),
        "field 4: the wallets' total"
    );
    assert_eq!(amounts(&a, b"57"), [5_000], "the amount asked for");
    let legs = tags(&a, "LG");
    assert_eq!(legs.len(), 1, "{legs:?}");
    assert!(legs[0].starts_with("emoney|EMONEY|1000|1000|"), "{legs:?}");
    let credit = requests(&f.acquirer, SHORT_CARD);
    assert_eq!(credit.len(), 1);
    assert_eq!(
        credit[0].1,
        Some(4_000),
        "the shortfall was asked of credit"
    );
    f.drained().await;
    assert_eq!(
        f.wallets(),
        [GIFT, EMONEY, SMALL, 0, MILEAGE],
        "the leg stands"
    );
    assert!(
        !f.emoney.seen().iter().any(|s| s.is_reversal()),
        "nothing reversed"
    );
    assert_eq!(f.acquirer.balance(SHORT_CARD), 0);
}

#[tokio::test(start_paused = true)]
async fn a_late_approval_from_a_wallet_issuer_is_reversed() {
    let f = flows().await;
    // E-1002's issuer takes the debit at once but answers only after twice the timeout.
    f.emoney.behave("E-1002", Behaviour::Late(LINK_TIMEOUT * 2));
    let req = with_tags(purchase(SMALL_CARD, 1_000, 60), &[("WS", "E-1002")]);
    let a = f.call(&req).await;
    // The debit timed out, so the acquirer paid all of it.
    assert_eq!(code(&a), "00");
    let legs = tags(&a, "LG");
    assert_eq!(legs.len(), 1, "{legs:?}");
    assert!(legs[0].starts_with("credit|acq1|1000|1000|"), "{legs:?}");
    assert_eq!(f.acquirer.balance(SMALL_CARD), 1_000);
    // The timed-out leg was reversed at the timeout; the approval then comes, late, and gets
    // a reversal of its own (the first may have reached the host before the debit did).
    f.drained().await;
    tokio::time::sleep(LINK_TIMEOUT * 2).await;
    f.drained().await;
    let seen = requests(&f.emoney, "E-1002");
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((seen[0].0.as_str(), seen[0].1), ("0200", Some(1_000)));
    for reversal in &seen[1..] {
        assert_eq!((reversal.0.as_str(), reversal.3), ("0400", Some(seen[0].2)));
    }
    assert_eq!(f.wallets(), OPENING, "the late approval's money is back");
}

/// The race SPEC §6 names: the leg times out, its reversal reaches the (slow) issuer before
/// the debit is applied and is acknowledged with 25; the debit is then applied and approved,
/// late. Only a reversal of the late approval's own gives the money back.
#[tokio::test(start_paused = true)]
async fn a_late_approval_applied_after_its_reversal_was_acknowledged_is_reversed_again() {
    let f = flows().await;
    f.emoney
        .behave("E-1002", Behaviour::SlowApply(LINK_TIMEOUT * 2));
    let req = with_tags(purchase(SMALL_CARD, 1_000, 61), &[("WS", "E-1002")]);
    let a = f.call(&req).await;
    assert_eq!(code(&a), "00");
    f.drained().await;
    tokio::time::sleep(LINK_TIMEOUT * 3).await;
    f.drained().await;
    let seen = f.emoney.seen_for("E-1002");
    let answered: Vec<(&str, Option<&str>)> = seen
        .iter()
        .map(|s| (s.mti.as_str(), s.answered.as_deref()))
        .collect();
    assert!(
        answered.contains(&("0400", Some("25"))),
        "the first reversal found nothing: {seen:?}"
    );
    assert_eq!(
        f.wallets(),
        OPENING,
        "the late debit was reversed: {seen:?}"
    );
}

/// An approval whose answer cannot be encoded (here: so many wallet legs that field 48's `LG`
/// elements pass 999 bytes, with the leg bound raised to its maximum — at the default bound
/// of 16 legs `LG` cannot overflow) went out as 96 while its legs stood. Now the answer is
/// 96 and every leg is reversed: the terminal saw no approval, so no money stays taken.
#[tokio::test(start_paused = true)]
async fn an_approval_that_cannot_be_encoded_is_answered_96_and_every_leg_reversed() {
    let f = flows_with("\n[limits]\nmax_legs = 64\nmax_links_per_card = 64\n").await;
    let card = "9410000000000021"; // no wallets in the demo
    let pan = Pan::parse(card.as_bytes()).unwrap();
    for i in 0..30 {
        let account = format!("G-9{i:03}");
        f.gift.open_account(&account, 10);
        let link = WalletLink::active("GIFT", &account, 1, "test");
        f.switch
            .directory
            .link(&pan, link, "test", |_| true)
            .unwrap();
    }
    let a = f.call(&purchase(card, 300, 70)).await;
    assert_eq!(code(&a), "96", "{a:?}");
    f.drained().await;
    for i in 0..30 {
        assert_eq!(
            f.gift.balance(&format!("G-9{i:03}")),
            10,
            "wallet {i} restored"
        );
    }
    assert_eq!(f.acquirer.balance(card), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retransmission_gets_the_same_answer_and_no_second_debit() {
    let f = flows().await;
    let req = with_tags(purchase(CARD, 1_000, 70), &[("WS", "E-1001")]);
    let first = f.call(&req).await;
    assert_eq!(code(&first), "00");
    assert_eq!(f.call(&req).await, first, "the same answer");
    let mut repeat = req.clone();
    repeat.set_mti(Mti::new(b"0201").unwrap());
    assert_eq!(f.call(&repeat).await, first, "a repeat (0201) too");
    assert_eq!(requests(&f.emoney, "E-1001").len(), 1, "one debit upstream");
    assert_eq!(f.wallets(), [GIFT, EMONEY - 1_000, SMALL, SHORT, MILEAGE]);
}

#[tokio::test(start_paused = true)]
async fn a_terminal_reversal_restores_every_leg_once() {
    let f = flows().await;
    // gift 50,000 + e-money 30,000 + mileage 5,000 + credit 5,000.
    let original = purchase(CARD, 90_000, 80);
    assert_eq!(code(&f.call(&original).await), "00");
    assert_eq!(f.wallets(), [0, 0, SMALL, SHORT, 0]);
    assert_eq!(f.acquirer.balance(CARD), 5_000);

    let a = f
        .call(&common::reversal_of(&original, 81, "0109070600"))
        .await;
    assert_eq!((a.mti().as_str(), code(&a).as_str()), ("0410", "00"));
    f.drained().await;
    assert_eq!(f.wallets(), OPENING);
    assert_eq!(f.acquirer.balance(CARD), 0);
    let reversals = |host: &ScriptedHost| host.seen().iter().filter(|s| s.is_reversal()).count();
    let once = [&f.gift, &f.emoney, &f.mileage, &f.acquirer].map(|h| reversals(h));
    assert_eq!(once, [1, 1, 1, 1], "one reversal per leg");

    // Reversed again (a new reversal message): answered, nothing sent or moved twice.
    let a = f
        .call(&common::reversal_of(&original, 82, "0109070700"))
        .await;
    assert_eq!(code(&a), "00");
    f.drained().await;
    assert_eq!(
        [&f.gift, &f.emoney, &f.mileage, &f.acquirer].map(|h| reversals(h)),
        once
    );
    assert_eq!(f.wallets(), OPENING);
    // An unknown original: 25.
    let unknown = purchase(CARD, 1, 999_999);
    let a = f
        .call(&common::reversal_of(&unknown, 83, "0109070800"))
        .await;
    assert_eq!(code(&a), "25");
}

/// A refund naming `original` in field 90, for `amount`.
fn refund_of(original: &OwnedMessage, amount: u64, stan: u32) -> OwnedMessage {
    let mut r = request(b"0200", SMALL_CARD, "200000", amount, stan);
    r.remove(2);
    let original_stan = std::str::from_utf8(original.get(11).unwrap())
        .unwrap()
        .parse::<u32>()
        .unwrap();
    r.set_original_data(&cyberswitch::iso8583::OriginalData {
        mti: original.mti(),
        stan: original_stan,
        transmission_time: 109_070_503,
        acquirer_id: 0,
        forwarder_id: 0,
    });
    r
}

/// A refund leg that gets no answer is not undone: it goes through as an advice (0220, then
/// 0221 repeats) until acknowledged, and gives the money back once.
#[tokio::test(start_paused = true)]
async fn an_unanswered_refund_leg_is_pushed_through_as_an_advice_and_gives_once() {
    let f = flows().await;
    let p = purchase(SMALL_CARD, 8_000, 60);
    assert_eq!(code(&f.call(&p).await), "00");
    assert_eq!(f.emoney.balance("E-1002"), 0);
    assert_eq!(f.acquirer.balance(SMALL_CARD), 3_000);

    f.emoney.behave("E-1002", Behaviour::Silent);
    let r = f.call(&refund_of(&p, 8_000, 61)).await;
    assert_eq!(
        code(&r),
        "00",
        "the e-money part is owed and pushed through"
    );
    assert_eq!(tags(&r, "LG").len(), 2, "{:?}", tags(&r, "LG"));
    let emoney = &f.emoney;
    until("the refund leg is repeated as 0221", || {
        emoney.seen().iter().any(|s| s.mti == "0221")
    })
    .await;
    emoney.behave("E-1002", Behaviour::Approve);
    f.drained().await;
    assert_eq!(f.emoney.balance("E-1002"), SMALL, "given back once");
    assert_eq!(f.acquirer.balance(SMALL_CARD), 0);
    // The refund leg and its advices: each names the purchase's debit in field 90.
    let refunds: Vec<_> = requests(emoney, "E-1002")
        .into_iter()
        .filter(|(.., original)| original.is_some())
        .collect();
    assert!(refunds.len() >= 3, "{refunds:?}");
    assert!(
        refunds.iter().all(|(_, _, stan, _)| *stan == refunds[0].2),
        "the advices are the refund leg itself: {refunds:?}"
    );
    // Nothing is left to refund.
    assert_eq!(code(&f.call(&refund_of(&p, 1, 62)).await), "13");
}

/// A refund leg that is declined takes back the refund legs given before it: the terminal
/// gets the decline and the purchase keeps all it had left.
#[tokio::test(start_paused = true)]
async fn a_declined_refund_leg_takes_back_the_legs_given_before_it() {
    let f = flows().await;
    let p = purchase(SMALL_CARD, 8_000, 70);
    assert_eq!(code(&f.call(&p).await), "00");
    // Credit first: the acquirer gives its 3,000 back, then the e-money issuer refuses.
    f.emoney.behave("E-1002", Behaviour::Decline("05"));
    let r = f.call(&refund_of(&p, 8_000, 71)).await;
    assert_eq!(code(&r), "05");
    f.drained().await;
    assert_eq!(
        f.acquirer.balance(SMALL_CARD),
        3_000,
        "the credit refund was reversed"
    );
    assert_eq!(f.emoney.balance("E-1002"), 0);
    // The purchase can still be refunded whole once the issuer accepts.
    f.emoney.behave("E-1002", Behaviour::Approve);
    assert_eq!(code(&f.call(&refund_of(&p, 8_000, 72)).await), "00");
    assert_eq!(f.acquirer.balance(SMALL_CARD), 0);
    assert_eq!(f.emoney.balance("E-1002"), SMALL);
}

/// An acquirer's fields are checked before they are echoed to the terminal (issue 20): a
/// field 54 that is not additional-amount blocks (and longer than the terminal's layout
/// holds) and an approval code with characters field 38 cannot carry are dropped, and the
/// approval goes out — not a 96 with the money given back. Well-formed blocks are relayed.
#[tokio::test(start_paused = true)]
async fn an_acquirers_malformed_fields_are_not_echoed_and_do_not_spoil_the_approval() {
    const PLAIN: &str = "9410000000000021";
    const LONG_54: &[u8] = b"these are not additional amounts, and they are longer than the one hundred and twenty characters a terminal's field 54 holds";
    let f = flows().await;
    f.acquirer.behave(
        PLAIN,
        Behaviour::ApproveWith(&[(54, LONG_54), (38, b"A-1|x")]),
    );
    let a = f.call(&purchase(PLAIN, 7_000, 801)).await;
    assert_eq!(code(&a), "00", "{a:?}");
    assert!(a.get(54).is_none() && a.get(38).is_none(), "{a:?}");
    assert_eq!(f.acquirer.balance(PLAIN), 7_000, "the approval stands");

    const BLOCK: &[u8] = b"6002410C000000012345";
    f.acquirer.behave(
        PLAIN,
        Behaviour::ApproveWith(&[(54, BLOCK), (38, b"OK123 ")]),
    );
    let a = f.call(&purchase(PLAIN, 1_000, 802)).await;
    assert_eq!(code(&a), "00", "{a:?}");
    assert_eq!(a.get(54), Some(BLOCK));
    assert_eq!(a.get(38), Some(&b"OK123 "[..]));
}

/// A refund leg answered after its timeout is pushed through as an advice; its approval, when
/// it comes late, is that refund arriving. It was reversed like a late debit (found by the
/// crash harness: refunds approved to the terminal, then taken back from the card).
#[tokio::test(start_paused = true)]
async fn a_refund_leg_approved_late_stands_and_gives_once() {
    let f = flows().await;
    let p = purchase(SMALL_CARD, 8_000, 80);
    assert_eq!(code(&f.call(&p).await), "00");
    assert_eq!(f.emoney.balance("E-1002"), 0);
    f.emoney.behave("E-1002", Behaviour::Late(LINK_TIMEOUT * 2));
    let r = f.call(&refund_of(&p, 8_000, 81)).await;
    assert_eq!(
        code(&r),
        "00",
        "the e-money part is owed and pushed through"
    );
    // The late approval of the refund leg arrives (the paused clock runs past it).
    tokio::time::sleep(LINK_TIMEOUT * 3).await;
    f.emoney.behave("E-1002", Behaviour::Approve);
    f.drained().await;
    assert_eq!(f.emoney.balance("E-1002"), SMALL, "given back, and kept");
    assert_eq!(f.acquirer.balance(SMALL_CARD), 0);
    assert_nothing_reversed(&f.emoney, "E-1002");
}

/// A refund keeps its purchase held until its own answer step, which writes what the
/// purchase has refunded, has landed: a reversal of the purchase arriving in between waits,
/// then finds the refund and is refused — released earlier, it found nothing refunded and
/// undid the whole purchase, and the refund then stood as well (money given twice).
#[cfg(feature = "fault-injection")]
#[tokio::test(start_paused = true)]
async fn a_reversal_waits_for_a_refund_of_its_purchase_to_be_written() {
    use cyberswitch::switch::testhooks::arm_pause;
    let f = flows().await;
    let p = purchase(SMALL_CARD, 4_000, 4_240);
    assert_eq!(code(&f.call(&p).await), "00");
    assert_eq!(f.emoney.balance("E-1002"), SMALL - 4_000);
    let pause = arm_pause("refund-decided", 4_241);
    let refund = refund_of(&p, 1_000, 4_241);
    let reversal = common::reversal_of(&p, 4_242, "0109070900");
    let (refund, reversal) = tokio::join!(f.call(&refund), async {
        until("the refund is decided", || pause.reached()).await;
        let reversal = f.call(&reversal);
        tokio::pin!(reversal);
        let early = tokio::time::timeout(Duration::from_secs(60), &mut reversal).await;
        assert!(
            early.is_err(),
            "the reversal was decided while the refund's answer was not written"
        );
        pause.release();
        reversal.await
    });
    assert_eq!(code(&refund), "00");
    assert_eq!(
        code(&reversal),
        "12",
        "a partly refunded purchase is not reversed"
    );
    f.drained().await;
    // The purchase stands less the refund: given once, never reversed.
    assert_eq!(f.emoney.balance("E-1002"), SMALL - 3_000);
    assert_nothing_reversed(&f.emoney, "E-1002");
}

/// An approved refund whose answer never reached its terminal is undone, giving its purchase
/// back what it had counted as refunded. Undone while a second refund of the purchase is
/// decided and not yet written, it waits for that refund: undone first, the second refund's
/// write (amounts read before the undoing) would count the first refund again, and the
/// purchase would have less left to refund than it has.
#[cfg(feature = "fault-injection")]
#[tokio::test(start_paused = true)]
async fn an_undelivered_refund_is_undone_after_a_refund_being_decided_is_written() {
    use cyberswitch::switch::testhooks::arm_pause;
    let f = flows().await;
    let p = purchase(SMALL_CARD, 4_000, 4_250);
    assert_eq!(code(&f.call(&p).await), "00");
    let mut frame = BytesMut::new();
    f.spec
        .encode(&refund_of(&p, 1_000, 4_251), &mut frame)
        .unwrap();
    let first = f
        .terminals
        .call(frame.freeze(), "terminal".into())
        .await
        .remove(0);
    let first_answer = f.spec.decode(&first).unwrap().to_owned_message();
    assert_eq!(code(&first_answer), "00");
    let pause = arm_pause("refund-decided", 4_252);
    let second = refund_of(&p, 1_000, 4_252);
    let (second, ()) = tokio::join!(f.call(&second), async {
        until("the second refund is decided", || pause.reached()).await;
        f.terminals.undelivered(first.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        pause.release();
    });
    assert_eq!(code(&second), "00");
    until("the first refund's leg is taken back", || {
        f.emoney.seen_for("E-1002").iter().any(|s| s.is_reversal())
    })
    .await;
    f.drained().await;
    // Only the second refund stands: 3,000 is left to refund, not 2,000.
    assert_eq!(code(&f.call(&refund_of(&p, 3_000, 4_253)).await), "00");
    assert_eq!(code(&f.call(&refund_of(&p, 1, 4_254)).await), "13");
}

/// The raw answers of one request, as a connection would get them (nothing reported written).
async fn raw_call(f: &Flows, request: &OwnedMessage) -> Bytes {
    let mut frame = BytesMut::new();
    f.spec.encode(request, &mut frame).unwrap();
    let mut answers = f.terminals.call(frame.freeze(), "terminal".into()).await;
    assert_eq!(answers.len(), 1, "one answer per request");
    answers.remove(0)
}

/// A terminal repeats its purchase on a new connection (F10) while the approval is still on
/// its way on the first: the repeat's copy, written, delivers the approval, and the first
/// copy failing afterwards undoes nothing (it did: the approval reached the terminal through
/// the repeat, and its money was given back — approved without taking).
#[tokio::test(start_paused = true)]
async fn an_approval_delivered_through_a_repeat_is_not_undone_when_the_first_copy_fails() {
    let f = flows().await;
    let p = purchase(SMALL_CARD, 3_000, 4_260);
    let first = raw_call(&f, &p).await;
    let repeat = raw_call(&f, &p).await;
    assert_eq!(first, repeat, "the repeat gets the approval");
    assert_eq!(
        code(&f.spec.decode(&first).unwrap().to_owned_message()),
        "00"
    );
    f.terminals.delivered(std::slice::from_ref(&repeat));
    f.terminals.undelivered(first);
    tokio::time::sleep(Duration::from_secs(60)).await;
    f.drained().await;
    assert_eq!(f.emoney.balance("E-1002"), SMALL - 3_000, "taken, and kept");
    assert_nothing_reversed(&f.emoney, "E-1002");
}

/// An approval is undone only once every copy of it has failed: the original's and a
/// repeat's. A repeat after that is told it was withdrawn (96).
#[tokio::test(start_paused = true)]
async fn an_approval_is_undone_only_when_every_copy_failed() {
    let f = flows().await;
    let p = purchase(SMALL_CARD, 3_000, 4_270);
    let first = raw_call(&f, &p).await;
    let repeat = raw_call(&f, &p).await;
    f.terminals.undelivered(first);
    tokio::time::sleep(Duration::from_secs(60)).await;
    f.drained().await;
    assert_nothing_reversed(&f.emoney, "E-1002");
    f.terminals.undelivered(repeat);
    until("the approval's leg is taken back", || {
        f.emoney.seen_for("E-1002").iter().any(|s| s.is_reversal())
    })
    .await;
    f.drained().await;
    assert_eq!(f.emoney.balance("E-1002"), SMALL, "given back");
    assert_eq!(code(&f.call(&p).await), "96", "a later repeat: withdrawn");
}

/// A wallet named twice in `WS` would be asked twice (a synced leg and two upstream calls
/// each): the selection is malformed, 30, and nothing is asked (issue 21).
#[tokio::test(start_paused = true)]
async fn a_wallet_selected_twice_is_a_format_error_and_nothing_is_asked() {
    let f = flows().await;
    let req = with_tags(purchase(CARD, 1_000, 70), &[("WS", "E-1001,E-1001")]);
    let a = f.call(&req).await;
    assert_eq!(code(&a), "30", "{a:?}");
    assert!(
        requests(&f.emoney, "E-1001").is_empty(),
        "a wallet was asked"
    );
}
