//! The demo's simulators: three wallet issuers (e-money, gift certificates, mileage points)
//! and an acquirer, their accounts, and starting them.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::sim::{Behaviour, SimAccount, SimConfig, SimKind, Simulator};

use super::{add_bulk_accounts, bulk_cards, DemoPorts, LOAD_BALANCE};

/// The four simulators' configurations on `ports`, with the demo cards' accounts.
pub fn sim_configs(dir: &Path, ports: &DemoPorts) -> Vec<SimConfig> {
    let issuer = |name: &str, listen, accounts: &[(&str, i64)]| SimConfig {
        kind: SimKind::Issuer,
        name: name.into(),
        listen,
        spec: "iso87-ascii".into(),
        framing: "binary2".into(),
        data_dir: dir.join(format!("sim-{}", name.to_lowercase())),
        approve_limit: None,
        accounts: accounts
            .iter()
            .map(|(id, balance)| SimAccount {
                id: id.to_string(),
                balance: *balance,
            })
            .collect(),
        behaviours: Vec::new(),
        reconciliation_skew: 0,
        tls: None,
    };
    let decline = |card: &str, code: &str| Behaviour {
        target: card.into(),
        decline: Some(code.into()),
        ..Behaviour::default()
    };
    vec![
        issuer(
            "EMONEY",
            ports.emoney,
            &[("E-1001", 30_000), ("E-1002", 5_000), ("E-1003", 1_000)],
        ),
        issuer("GIFT", ports.gift, &[("G-3001", 50_000)]),
        issuer("MILEAGE", ports.mileage, &[("M-2001", 10_000)]),
        SimConfig {
            kind: SimKind::Acquirer,
            name: "ACQ1".into(),
            listen: ports.acquirer,
            spec: "iso87-ascii".into(),
            framing: "binary2".into(),
            data_dir: dir.join("sim-acq1"),
            approve_limit: Some(5_000_000),
            accounts: Vec::new(),
            behaviours: vec![
                decline("9410000000000047", "05"),
                decline("9410000000000054", "51"),
            ],
            reconciliation_skew: 0,
            tls: None,
        },
    ]
}

/// The demo's four simulators with the accounts of `load_cards` bulk cards, on the demo's
/// fixed ports: `cyberswitch sim demo`, beside `cyberswitch demo --external-sims`.
pub async fn start_demo_sims(
    dir: &Path,
    load_cards: usize,
    stop: CancellationToken,
) -> Result<Vec<std::sync::Arc<Simulator>>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut ports = DemoPorts::default();
    let mut configs = sim_configs(dir, &ports);
    add_bulk_accounts(&mut configs, &bulk_cards(load_cards), LOAD_BALANCE);
    start_sims(configs, &mut ports, &stop).await
}

/// Start the demo's simulators; those configured on port 0 get an ephemeral port, written
/// back into `ports` for the switch's configuration.
pub async fn start_sims(
    configs: Vec<SimConfig>,
    ports: &mut DemoPorts,
    stop: &CancellationToken,
) -> Result<Vec<std::sync::Arc<Simulator>>, String> {
    let mut sims = Vec::new();
    for sc in configs {
        let sim = Simulator::start(sc, stop.clone()).await?;
        match sim.name.as_str() {
            "EMONEY" => ports.emoney = sim.addr,
            "GIFT" => ports.gift = sim.addr,
            "MILEAGE" => ports.mileage = sim.addr,
            _ => ports.acquirer = sim.addr,
        }
        sims.push(sim);
    }
    Ok(sims)
}
