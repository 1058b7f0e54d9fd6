//! What a fresh demo data directory starts with: the demo cards' wallets, a prepaid card and
//! a virtual-account pool (the README's examples use them).

use crate::directory::{Directory, WalletLink};
use crate::iso8583::Pan;

/// The demo's wallets: (card, issuer, account, priority, label).
pub const DEMO_LINKS: &[(&str, &str, &str, u32, &str)] = &[
    ("9410000000000013", "GIFT", "G-3001", 1, "gift certificate"),
    ("9410000000000013", "EMONEY", "E-1001", 2, "e-money"),
    ("9410000000000013", "MILEAGE", "M-2001", 3, "mileage"),
    ("9410000000000039", "EMONEY", "E-1002", 1, "e-money"),
    ("9410000000000054", "EMONEY", "E-1003", 1, "e-money"),
];

/// Link the demo cards' wallets ([`DEMO_LINKS`]).
fn seed_links(directory: &Directory) -> Result<(), String> {
    for (card, issuer, account, priority, label) in DEMO_LINKS {
        let pan = Pan::parse(card.as_bytes()).map_err(|e| e.to_string())?;
        directory.link(
            &pan,
            WalletLink {
                label: label.to_string(),
                ..WalletLink::active(issuer, account, *priority, "demo")
            },
            "demo",
            |_| true,
        )?;
    }
    Ok(())
}

/// Seed a fresh data directory: the demo cards' links, its prepaid card, its pool.
pub(super) async fn seed(switch: &crate::switch::Switch) -> Result<(), String> {
    seed_links(&switch.directory)?;
    seed_prepaid(&switch.hosted).await?;
    seed_virtual_accounts(&switch.va).await
}

/// The demo's virtual-account pool (F17): partner, bank, region, and its 20 accounts.
pub const DEMO_VA: (&str, &str, &str) = ("DEMOMALL", "004", "SEOUL");

/// The demo pool's account numbers.
pub fn demo_va_accounts() -> Vec<String> {
    (1..=20).map(|i| format!("0041234560{i:04}")).collect()
}

async fn seed_virtual_accounts(va: &crate::va::VirtualAccounts) -> Result<(), String> {
    let (partner, bank, region) = DEMO_VA;
    va.pool_add(partner, bank, region, &demo_va_accounts(), "demo")
        .await
        .map(|_| ())
        .map_err(|e| format!("demo virtual accounts: {e}"))
}

/// The demo's prepaid card (README): number, PIN, balance.
pub const DEMO_PREPAID: (&str, &str, u64) = ("6270000000000018", "1234", 20_000);

async fn seed_prepaid(hosted: &crate::hosted::Hosted) -> Result<(), String> {
    let (number, pin, balance) = DEMO_PREPAID;
    let (card, _) = hosted
        .issue(crate::hosted::cards::IssueRequest {
            program: "PREPAID".into(),
            denomination: balance,
            card_number: number.into(),
            holder: Some("Demo Holder".into()),
            owner: None,
        })
        .await
        .map_err(|e| format!("demo prepaid card: {e}"))?;
    hosted
        .activate(&card.id, Some(pin))
        .await
        .map_err(|e| format!("demo prepaid card: {e}"))?;
    Ok(())
}
