//! Legs sent ahead of their record (`[[link]] legs_ahead`, the demo's links have it): the
//! demo's real switch and simulators over real TCP, RocksDB in a temp dir.
//!
//! - A simulator finds a leg by its identity alone (a blind reversal), remembers an identity
//!   it reversed before seeing it, and declines that leg should it come later.
//! - A leg whose record never reached the disk, though the host took its money, halts the
//!   journal; the next start reverses it blind and the money comes back, once.
//! - A graceful stop marks the links clean: the next start reverses nothing blind.

mod common;

use common::{code, copy_dir};

use std::time::Duration;

use cyberswitch::demo::{self, Demo, DemoPorts};
use cyberswitch::iso8583::{Mti, OriginalData, OwnedMessage};
use cyberswitch::net::client::Client;
use cyberswitch::sim::Simulator;
use tokio_util::sync::CancellationToken;

const GIFT_CARD: &str = "9410000000000013"; // GIFT G-3001, EMONEY E-1001, MILEAGE M-2001

async fn sim_call(sim: &Simulator, m: &OwnedMessage) -> OwnedMessage {
    let mut client = Client::connect(
        &sim.addr.to_string(),
        common::terminal_spec(),
        "binary2".parse().unwrap(),
    )
    .await
    .unwrap();
    client.call(m, Duration::from_secs(5)).await.unwrap()
}

/// A debit of the gift account as the switch sends it on a link with legs ahead.
fn debit(identity: &str, stan: u64, amount: u64) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(b"0200").unwrap());
    m.set(3, b"000000")
        .set_number(4, amount, 12)
        .set(7, b"1207120000")
        .set_number(11, stan, 6)
        .set(15, b"1207")
        .set(37, identity.as_bytes())
        .set(41, b"CSW00004")
        .set(49, b"410")
        .set(102, b"G-3001");
    m
}

/// A purchase of `amount` from the demo card's gift wallet, by a terminal.
fn purchase(amount: u64, stan: u32) -> OwnedMessage {
    let mut m = common::terminal_request(
        b"0200",
        "000000",
        amount,
        stan,
        "TERMAHD1",
        "MERCHANT0000001",
    );
    m.set(2, GIFT_CARD.as_bytes());
    common::with_tags(m, &[("WS", "G-3001")])
}

/// A blind reversal: field 37 alone names the leg (field 90's STAN and time zero).
fn blind_reversal(identity: &str, stan: u64) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(b"0400").unwrap());
    m.set(7, b"1207120100")
        .set_number(11, stan, 6)
        .set(15, b"1207")
        .set(37, identity.as_bytes())
        .set(41, b"BLINDREV");
    m.set_original_data(&OriginalData {
        mti: Mti::new(b"0200").unwrap(),
        stan: 0,
        transmission_time: 0,
        acquirer_id: 0,
        forwarder_id: 0,
    });
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulator_reverses_a_leg_by_its_identity_alone_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, stop) = common::start_demo(dir.path(), "").await;
    let gift = demo.sim("GIFT").unwrap();
    let before = gift.balance("G-3001").unwrap();

    // A leg it took: the blind reversal gives the money back and says what the leg was.
    let taken = sim_call(gift, &debit("A90000000001", 901, 1_200)).await;
    assert_eq!(code(&taken), "00");
    assert_eq!(gift.balance("G-3001"), Some(before - 1_200));
    let undone = sim_call(gift, &blind_reversal("A90000000001", 902)).await;
    assert_eq!(code(&undone), "00", "{undone:?}");
    assert_eq!(undone.get(3), Some(&b"000000"[..]));
    assert_eq!(common::number(&undone, 4), 1_200);
    assert_eq!(gift.balance("G-3001"), Some(before));
    // Its repeat gives nothing more.
    let again = sim_call(gift, &blind_reversal("A90000000001", 903)).await;
    assert_eq!(code(&again), "00");
    assert_eq!(gift.balance("G-3001"), Some(before));

    // An identity it never saw: 25, and the leg, should it come later, takes nothing.
    let unseen = sim_call(gift, &blind_reversal("A90000000002", 904)).await;
    assert_eq!(code(&unseen), "25");
    let late = sim_call(gift, &debit("A90000000002", 905, 700)).await;
    assert_eq!(
        code(&late),
        "12",
        "a leg reversed before it came is declined"
    );
    assert_eq!(gift.balance("G-3001"), Some(before));
    stop.cancel();
}

/// The hole legs ahead open, closed: the gift leg of a purchase reaches the simulator and
/// takes the money, but its record's write fails. The journal halts (nothing after it may
/// land), the terminal is not approved, later purchases move nothing. The next start
/// reverses the link's window blind, and the money comes back exactly once.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leg_whose_record_never_landed_is_reversed_blind_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, stop) = common::start_demo(dir.path(), "").await;
    let spec = common::terminal_spec();
    let gift = demo.sim("GIFT").unwrap();
    let before = gift.balance("G-3001").unwrap();
    let journal = &demo.running.switch.journal;

    journal.inject_fault("ahead-record", 1);
    let lost = purchase(2_500, 401);
    let a = common::call(&demo, &spec, &lost).await;
    assert_ne!(code(&a), "00", "an approval whose leg has no record: {a:?}");
    assert_eq!(
        gift.balance("G-3001"),
        Some(before - 2_500),
        "the leg reached the host"
    );
    assert!(journal.is_halted());
    // The operator's health check says so.
    let health = common::api_client(&demo, "operator.token")
        .call("get", "/v1/health", None)
        .await
        .unwrap();
    assert_eq!(health.status, 503);
    assert_eq!(health.error_code(), Some("journal_halted"));
    // Nothing more is sent or taken while halted.
    let b = purchase(1_000, 402);
    assert_ne!(code(&common::call(&demo, &spec, &b).await), "00");
    assert_eq!(gift.balance("G-3001"), Some(before - 2_500));

    let restarted = restart(dir.path(), demo, stop).await;
    let (demo, _stop, _copy) = &restarted;
    common::drained(demo).await;
    let gift = demo.sim("GIFT").unwrap();
    assert_eq!(
        gift.balance("G-3001"),
        Some(before),
        "reversed blind at the start"
    );
    assert_eq!(demo.running.switch.saf.dead_letters(), 0);
    // The switch goes on: a purchase is approved, with a new identity.
    let c = purchase(1_000, 403);
    assert_eq!(
        code(&common::call(demo, &common::terminal_spec(), &c).await),
        "00"
    );
    assert_eq!(gift.balance("G-3001"), Some(before - 1_000));
}

/// After a graceful stop every record of a leg sent ahead is on disk: the next start
/// queues no blind reversal. After a stop that was not graceful it queues the window of
/// every link that has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_start_after_a_stop_that_was_not_graceful_reverses_blind() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, stop) = common::start_demo(dir.path(), "").await;
    let spec = common::terminal_spec();
    let first = purchase(1_500, 501);
    assert_eq!(code(&common::call(&demo, &spec, &first).await), "00");
    let gift = demo.sim("GIFT").unwrap();
    let after_purchase = gift.balance("G-3001").unwrap();

    // Not graceful: each of the demo's four links has its window reversed blind (25).
    let (demo, stop, _copy) = restart(dir.path(), demo, stop).await;
    let queued = demo.running.switch.saf.queued_total();
    assert_eq!(queued, 4 * 64, "every link's window");
    common::drained(&demo).await;
    assert_eq!(
        demo.sim("GIFT").unwrap().balance("G-3001"),
        Some(after_purchase),
        "the approved purchase stands"
    );
    assert_eq!(demo.running.switch.saf.dead_letters(), 0);

    // Graceful: nothing to reverse at the next start.
    let copy_dir_path = _copy.path().to_path_buf();
    let Demo { running, sims, .. } = demo;
    running.shutdown(&stop).await;
    drop(sims);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = tempfile::tempdir().unwrap();
    copy_dir(&copy_dir_path, again.path());
    let stop = CancellationToken::new();
    let demo = demo::start(again.path(), DemoPorts::ephemeral(), stop.clone())
        .await
        .expect("the demo restarts on its data directory");
    assert_eq!(demo.running.switch.saf.queued_total(), 0);
    stop.cancel();
}

/// Stop the demo without a graceful stop (as a crash would leave it, the databases as they
/// stand) and start it again on a copy of its directory.
async fn restart(
    dir: &std::path::Path,
    demo: Demo,
    stop: CancellationToken,
) -> (Demo, CancellationToken, tempfile::TempDir) {
    stop.cancel();
    drop(demo);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let stop = CancellationToken::new();
    let demo = demo::start(copy.path(), DemoPorts::ephemeral(), stop.clone())
        .await
        .expect("the demo restarts on its data directory");
    (demo, stop, copy)
}

/// Only legs that take go ahead: a refund leg waits for its record (a refund a crash lost
/// must be pushed through, never reversed blind). With the next write of a record sent
/// ahead set to fail, a refund still goes through and the journal goes on; the next
/// purchase's leg is the one that trips it.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_leg_waits_for_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, stop) = common::start_demo(dir.path(), "").await;
    let spec = common::terminal_spec();
    let gift = demo.sim("GIFT").unwrap();
    let before = gift.balance("G-3001").unwrap();
    let journal = &demo.running.switch.journal;

    let bought = purchase(3_000, 601);
    assert_eq!(code(&common::call(&demo, &spec, &bought).await), "00");
    journal.inject_fault("ahead-record", 1);
    let mut refund =
        common::terminal_request(b"0200", "200000", 1_000, 602, "TERMAHD1", "MERCHANT0000001");
    refund.set_original_data(&common::original_data_of(&bought));
    let r = common::call(&demo, &spec, &refund).await;
    assert_eq!(code(&r), "00", "{r:?}");
    assert!(!journal.is_halted(), "the refund leg went ahead");
    assert_eq!(gift.balance("G-3001"), Some(before - 2_000));
    // The fault is still armed: the next leg that goes ahead trips it.
    let next = purchase(500, 603);
    assert_ne!(code(&common::call(&demo, &spec, &next).await), "00");
    assert!(journal.is_halted());
    stop.cancel();
}
