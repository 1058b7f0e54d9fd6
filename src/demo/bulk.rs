//! The bulk cards of load and crash runs: numbers spread over their BIN, three wallets each,
//! their accounts at the simulators and their links.

use crate::directory::WalletLink;
use crate::iso8583::Pan;
use crate::sim::{SimAccount, SimConfig};

/// A card of the bulk set used by load and crash tests: three wallets of its own (e-money,
/// gift certificate, mileage points) so that every card's money can be checked on its own.
#[derive(Debug, Clone)]
pub struct BulkCard {
    pub pan: String,
    pub emoney: String,
    pub gift: String,
    pub mileage: String,
}

/// Opening balance of each bulk card wallet for load runs: enough for any run.
pub const LOAD_BALANCE: i64 = 1_000_000_000_000;

/// A card in BIN 943000 with no wallets: its purchases are relayed to the acquirer (F6).
pub fn plain_card(i: usize) -> String {
    format!("943000{:010}", spread(i))
}

/// `count` cards in BIN 942000 (kept clear of the demo's own 941000 cards).
pub fn bulk_cards(count: usize) -> Vec<BulkCard> {
    (0..count).map(bulk_cards_one).collect()
}

/// Ten digits that differ for every `i` (an affine bijection modulo 10^10) and look random,
/// so that card numbers are not mostly zeros: a scan for them in binary files (packed BCD)
/// must not match by chance.
fn spread(i: usize) -> u64 {
    const M: u128 = 10_000_000_000;
    // 7,654,321,013 is odd and not a multiple of 5: coprime to 10^10, so this is a bijection.
    ((i as u128 % M * 7_654_321_013 + 3_141_592_653) % M) as u64 // ok: below 10^10
}

/// Bulk card number `i`.
pub fn bulk_cards_one(i: usize) -> BulkCard {
    BulkCard {
        pan: format!("942000{:010}", spread(i)),
        emoney: format!("LE-{i:06}"),
        gift: format!("LG-{i:06}"),
        mileage: format!("LM-{i:06}"),
    }
}

/// One of a bulk card's wallets.
type WalletOf = fn(&BulkCard) -> &String;

/// Open the bulk cards' accounts at the demo's simulators, each with `balance` currency units
/// (points: twice as many, at the demo's rate of 2).
pub fn add_bulk_accounts(sims: &mut [SimConfig], cards: &[BulkCard], balance: i64) {
    for sim in sims.iter_mut() {
        // Which of a card's wallets this simulator holds, and its opening balance.
        let wallet: Option<(WalletOf, i64)> = match sim.name.as_str() {
            "EMONEY" => Some((|c| &c.emoney, balance)),
            "GIFT" => Some((|c| &c.gift, balance)),
            "MILEAGE" => Some((|c| &c.mileage, balance * 2)),
            _ => None,
        };
        if let Some((id, balance)) = wallet {
            sim.accounts.extend(cards.iter().map(|c| SimAccount {
                id: id(c).clone(),
                balance,
            }));
        }
    }
}

/// Link the bulk cards' wallets (gift first, then e-money, then points).
pub fn link_bulk_cards(
    directory: &crate::directory::Directory,
    cards: &[BulkCard],
) -> Result<(), String> {
    for c in cards {
        let pan = Pan::parse(c.pan.as_bytes()).map_err(|e| e.to_string())?;
        for (issuer, account, priority) in [
            ("GIFT", &c.gift, 1),
            ("EMONEY", &c.emoney, 2),
            ("MILEAGE", &c.mileage, 3),
        ] {
            directory.link(
                &pan,
                WalletLink::active(issuer, account, priority, "demo"),
                "demo",
                |_| true,
            )?;
        }
    }
    Ok(())
}
