//! `cyberswitch demo`: the switch, three wallet issuer simulators and an acquirer simulator in
//! one process, with the demo cards and wallets seeded into a fresh data directory (an existing
//! one is resumed as it is).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::WalletLink;
use crate::iso8583::Pan;
use crate::sim::{Behaviour, SimAccount, SimConfig, SimKind, Simulator};

/// Where each part listens; the demo uses the fixed ports of the README, tests use port 0.
#[derive(Debug, Clone)]
pub struct DemoPorts {
    pub switch: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub emoney: SocketAddr,
    pub gift: SocketAddr,
    pub mileage: SocketAddr,
    pub acquirer: SocketAddr,
    pub admin: SocketAddr,
}

impl Default for DemoPorts {
    fn default() -> Self {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        DemoPorts {
            switch: at(8583),
            metrics: Some(at(9583)),
            emoney: at(9101),
            gift: at(9102),
            mileage: at(9103),
            acquirer: at(9201),
            admin: at(8580),
        }
    }
}

impl DemoPorts {
    /// F17's bank listener: 8585 beside the fixed admin port (8580) of the README's demo, any
    /// port otherwise (tests, several demos side by side).
    pub fn bank(&self) -> SocketAddr {
        self.beside_admin(8585)
    }

    /// The demo's partner callback receiver: 8590 beside the fixed admin port, any port
    /// otherwise.
    pub fn partner(&self) -> SocketAddr {
        self.beside_admin(8590)
    }

    /// The fixed port only beside the README's fixed admin port: tests that pick ports of
    /// their own (any other admin port) get ports the system picks, never a fixed one that
    /// another test or a running demo may hold.
    fn beside_admin(&self, port: u16) -> SocketAddr {
        let fixed = self.admin.port() == DemoPorts::default().admin.port();
        SocketAddr::new(self.admin.ip(), if fixed { port } else { 0 })
    }

    /// Every part on an ephemeral port (tests, `load --demo`): nothing else in the way.
    pub fn ephemeral() -> DemoPorts {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        DemoPorts {
            switch: any,
            metrics: None,
            emoney: any,
            gift: any,
            mileage: any,
            acquirer: any,
            admin: any,
        }
    }

    /// As [`DemoPorts::ephemeral`], with metrics served too (`cyberswitch demo
    /// --ephemeral-ports`: a process has one metrics recorder, and this one is the demo's).
    pub fn ephemeral_with_metrics() -> DemoPorts {
        DemoPorts {
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..DemoPorts::ephemeral()
        }
    }
}

/// The demo's TLS parts (SPEC §10), certificates from its own CA in `<data-dir>/tls/`: a TLS
/// terminal listener beside the plain one, and the admin API over HTTPS. `cyberswitch demo`
/// has both ([`DemoTls::fixed`]); the tests and `--ephemeral-ports` (the crash harness) run
/// plain unless they ask ([`DemoTls::ephemeral`]).
#[derive(Debug, Clone, Default)]
pub struct DemoTls {
    pub switch: Option<SocketAddr>,
    pub admin: bool,
}

impl DemoTls {
    /// 127.0.0.1:8584 and HTTPS on the admin port (8580).
    pub fn fixed() -> DemoTls {
        DemoTls {
            switch: Some(SocketAddr::from(([127, 0, 0, 1], 8584))),
            admin: true,
        }
    }

    /// Both, the TLS listener on an ephemeral port.
    pub fn ephemeral() -> DemoTls {
        DemoTls {
            switch: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            admin: true,
        }
    }

    fn any(&self) -> bool {
        self.switch.is_some() || self.admin
    }
}

/// The demo's wallets: (card, issuer, account, priority, label).
pub const DEMO_LINKS: &[(&str, &str, &str, u32, &str)] = &[
    ("9410000000000013", "GIFT", "G-3001", 1, "gift certificate"),
    ("9410000000000013", "EMONEY", "E-1001", 2, "e-money"),
    ("9410000000000013", "MILEAGE", "M-2001", 3, "mileage"),
    ("9410000000000039", "EMONEY", "E-1002", 1, "e-money"),
    ("9410000000000054", "EMONEY", "E-1003", 1, "e-money"),
];

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

/// Open the bulk cards' accounts at the demo's simulators, each with `balance` currency units
/// (points: twice as many, at the demo's rate of 2).
pub fn add_bulk_accounts(sims: &mut [SimConfig], cards: &[BulkCard], balance: i64) {
    for sim in sims.iter_mut() {
        let accounts: Vec<SimAccount> = match sim.name.as_str() {
            "EMONEY" => cards
                .iter()
                .map(|c| SimAccount {
                    id: c.emoney.clone(),
                    balance,
                })
                .collect(),
            "GIFT" => cards
                .iter()
                .map(|c| SimAccount {
                    id: c.gift.clone(),
                    balance,
                })
                .collect(),
            "MILEAGE" => cards
                .iter()
                .map(|c| SimAccount {
                    id: c.mileage.clone(),
                    balance: balance * 2,
                })
                .collect(),
            _ => Vec::new(),
        };
        sim.accounts.extend(accounts);
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

/// The name of the demo's TLS terminal listener.
pub const TLS_LISTENER: &str = "terminals-tls";

/// The switch configuration of the demo, as TOML (also written to the data directory so that
/// `cyberswitch link … --config DIR/cyberswitch.toml` works against it).
pub fn switch_config_toml(dir: &Path, ports: &DemoPorts) -> String {
    switch_config_toml_tls(dir, ports, &DemoTls::default(), ports.partner())
}

/// As [`switch_config_toml`], with the TLS parts `tls_ports` asks for and the partner
/// receiver where it was bound.
pub fn switch_config_toml_tls(
    dir: &Path,
    ports: &DemoPorts,
    tls_ports: &DemoTls,
    partner: SocketAddr,
) -> String {
    let tls = crate::net::pki::DemoPki::paths(dir);
    let tls_files = format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        tls.cert.display(),
        tls.key.display()
    );
    let tls_listener = tls_ports
        .switch
        .map(|addr| {
            format!(
                "[[listener]]\nname = \"{TLS_LISTENER}\"\naddr = \"{addr}\"\nspec = \"iso87-ascii\"\nframing = \"binary2\"\nmax_connections = 1000\npin_key = {{ file = \"{}\" }}\ntls = {tls_files}\n\n",
                dir.join("terminal-pin.key").display()
            )
        })
        .unwrap_or_default();
    let admin_tls = if tls_ports.admin {
        format!("tls = {tls_files}\n")
    } else {
        String::new()
    };
    let metrics = ports
        .metrics
        .map(|m| format!("metrics_addr = \"{m}\"\n"))
        .unwrap_or_default();
    let link = |name: &str, kind: &str, addr: SocketAddr| {
        format!(
            "[[link]]\nname = \"{name}\"\nkind = \"{kind}\"\nhosts = [\"{addr}\"]\ntimeout_ms = 1500\necho_interval_ms = 30000\n\n"
        )
    };
    format!(
        r#"# Written by `cyberswitch demo`.
data_dir = "{data}"
{metrics}card_key_file = "{key}"
currency = 410

[[listener]]
name = "terminals"
addr = "{switch}"
spec = "iso87-ascii"
framing = "binary2"
pin_key = {{ file = "{pin_key}" }}

{tls_listener}# F17: banks ask here whether to accept deposits to virtual accounts.
[[listener]]
name = "bank"
addr = "{bank}"
spec = "iso87-ascii"
framing = "binary2"
role = "bank"
bank = "{va_bank}"
max_connections = 64

{emoney}{gift}{mileage}{acq}[[issuer]]
id = "EMONEY"
kind = "emoney"
unit = "KRW"
units_per_currency_unit = 1
link = "emoney"

[[issuer]]
id = "GIFT"
kind = "giftcert"
unit = "KRW"
units_per_currency_unit = 1
link = "gift"

[[issuer]]
id = "MILEAGE"
kind = "points"
unit = "P"
units_per_currency_unit = 2
link = "mileage"

[[issuer]]
id = "CYBERPOINTS"
kind = "points"
unit = "P"
units_per_currency_unit = 1
hosted = true

[routing]
default_acquirer = "acq1"

# The switch's own prepaid program (hosted ledger): cards 627000… are answered in-process.
[[hosted.program]]
id = "PREPAID"
kind = "prepaid"
bin_from = "627000"
bin_to = "627000"
denominations = [5000, 10000, 20000, 30000, 50000, 100000]
pin_required = true
points_per_1000 = 10
points_issuer = "CYBERPOINTS"

[[hosted.program]]
id = "ANON"
kind = "anonymous"
bin_from = "627100"
bin_to = "627100"

[[hosted.program]]
id = "DIVISION"
kind = "subaccount"
bin_from = "627200"
bin_to = "627200"
pin_required = true

# F17 paid orders and F15 daily statements go to the demo's own receiver.
[[partner]]
id = "{va_partner}"
{callback}secret = {{ file = "{partner_secret}" }}

[outbox]
retry_min_ms = 200
retry_max_ms = 2000

[admin]
addr = "{admin}"
{admin_tls}
[[admin.token]]
name = "demo operator"
role = "operator"
token = {{ file = "{token}" }}

[[admin.token]]
name = "demo mall"
role = "partner"
scope = "{va_partner}"
token = {{ file = "{partner_token}" }}

# The e-money issuer: confirms the partner's links to its accounts (SPEC §10).
[[admin.token]]
name = "demo issuer EMONEY"
role = "issuer"
scope = "EMONEY"
token = {{ file = "{issuer_token}" }}
"#,
        data = dir.join("switch").display(),
        key = dir.join("card.key").display(),
        pin_key = dir.join("terminal-pin.key").display(),
        switch = ports.switch,
        emoney = link("emoney", "issuer", ports.emoney),
        gift = link("gift", "issuer", ports.gift),
        mileage = link("mileage", "issuer", ports.mileage),
        acq = link("acq1", "acquirer", ports.acquirer),
        admin = ports.admin,
        token = dir.join("operator.token").display(),
        bank = ports.bank(),
        // Without a receiver bound (a configuration for tests), no callbacks.
        callback = if partner.port() == 0 {
            String::new()
        } else {
            format!("callback_url = \"http://{partner}/callbacks\"\n")
        },
        va_bank = DEMO_VA.1,
        va_partner = DEMO_VA.0,
        partner_secret = dir.join("partner.secret").display(),
        partner_token = dir.join("partner.token").display(),
        issuer_token = dir.join("issuer-emoney.token").display(),
    )
}

/// A running demo.
pub struct Demo {
    pub running: crate::daemon::Running,
    pub sims: Vec<std::sync::Arc<Simulator>>,
    pub metrics: Option<SocketAddr>,
    pub dir: PathBuf,
    /// The partner receiver the demo's callbacks go to.
    pub partner: crate::sim::partner::PartnerSim,
}

impl Demo {
    pub fn sim(&self, name: &str) -> Option<&Simulator> {
        self.sims
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.as_ref())
    }
    pub fn switch_addr(&self) -> SocketAddr {
        self.running.addrs[0].1
    }

    /// The TLS terminal listener, when the ports asked for one.
    pub fn tls_switch_addr(&self) -> Option<SocketAddr> {
        self.running
            .addrs
            .iter()
            .find(|(name, _)| name == TLS_LISTENER)
            .map(|(_, a)| *a)
    }

    /// The CA of the TLS listener and the HTTPS admin API.
    pub fn ca(&self) -> PathBuf {
        crate::net::pki::DemoPki::paths(&self.dir).ca
    }

    /// The bank listener (F17).
    pub fn bank_addr(&self) -> Option<SocketAddr> {
        self.running
            .addrs
            .iter()
            .find(|(name, _)| name == "bank")
            .map(|(_, a)| *a)
    }
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

/// The demo with `load_cards` bulk cards added (wallets of [`LOAD_BALANCE`] each), for
/// `cyberswitch load`. Cards are linked on a fresh directory only.
pub async fn start_for_load(
    dir: &Path,
    ports: DemoPorts,
    stop: CancellationToken,
    load_cards: usize,
) -> Result<Demo, String> {
    start_for_load_tls(dir, ports, &DemoTls::default(), stop, load_cards).await
}

/// As [`start_for_load`], with the TLS parts `tls` asks for.
pub async fn start_for_load_tls(
    dir: &Path,
    ports: DemoPorts,
    tls: &DemoTls,
    stop: CancellationToken,
    load_cards: usize,
) -> Result<Demo, String> {
    let bench = BenchDemo {
        load_cards,
        ..BenchDemo::default()
    };
    start_for_bench(dir, ports, tls, stop, bench).await
}

/// How `cyberswitch demo` runs for a benchmark (`scripts/perf-run.sh`).
#[derive(Debug, Clone, Default)]
pub struct BenchDemo {
    /// Bulk cards linked on a fresh directory (their accounts opened at the simulators).
    pub load_cards: usize,
    /// The simulators run in another process ([`start_demo_sims`]) on `ports`.
    pub external_sims: bool,
    /// TOML appended to the switch's configuration (a `[bench]` table).
    pub extra_toml: String,
}

/// As [`start_for_load_tls`], for benchmarks: simulators perhaps elsewhere, settings added.
pub async fn start_for_bench(
    dir: &Path,
    ports: DemoPorts,
    tls: &DemoTls,
    stop: CancellationToken,
    bench: BenchDemo,
) -> Result<Demo, String> {
    let fresh = !dir.join("switch").exists();
    let cards = bulk_cards(bench.load_cards);
    let demo = start_full(
        dir,
        ports,
        tls,
        stop,
        |sims| match bench.external_sims {
            true => sims.clear(),
            false => add_bulk_accounts(sims, &cards, LOAD_BALANCE),
        },
        &bench.extra_toml,
    )
    .await?;
    if fresh {
        link_bulk_cards(&demo.running.switch.directory, &cards)?;
    }
    Ok(demo)
}

/// Start everything; seed a fresh directory.
pub async fn start(dir: &Path, ports: DemoPorts, stop: CancellationToken) -> Result<Demo, String> {
    start_custom(dir, ports, stop, |_| {}).await
}

/// As [`start`], with a chance to change the simulators first (tests give them behaviours).
pub async fn start_custom(
    dir: &Path,
    ports: DemoPorts,
    stop: CancellationToken,
    adjust: impl FnOnce(&mut Vec<SimConfig>),
) -> Result<Demo, String> {
    start_with(dir, ports, stop, adjust, "").await
}

/// As [`start_custom`], with TOML appended to the switch's configuration (for example a
/// `[limits]` table).
pub async fn start_with(
    dir: &Path,
    ports: DemoPorts,
    stop: CancellationToken,
    adjust: impl FnOnce(&mut Vec<SimConfig>),
    extra_toml: &str,
) -> Result<Demo, String> {
    start_full(dir, ports, &DemoTls::default(), stop, adjust, extra_toml).await
}

/// As [`start_with`], with the TLS parts `tls` asks for.
pub async fn start_full(
    dir: &Path,
    ports: DemoPorts,
    tls: &DemoTls,
    stop: CancellationToken,
    adjust: impl FnOnce(&mut Vec<SimConfig>),
    extra_toml: &str,
) -> Result<Demo, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fresh = !dir.join("switch").exists();
    write_secrets(dir)?;
    if tls.any() {
        crate::net::pki::DemoPki::ensure(dir)?;
    }
    let mut ports = ports;
    let mut configs = sim_configs(dir, &ports);
    adjust(&mut configs);
    let sims = start_sims(configs, &mut ports, &stop).await?;
    let partner_secret = secret(dir, "partner.secret")?;
    let partner = crate::sim::partner::PartnerSim::start(
        ports.partner(),
        &partner_secret,
        false,
        stop.clone(),
    )
    .await?;
    let metrics = match ports.metrics {
        Some(addr) => Some(crate::observe::serve_metrics(addr, stop.clone()).await?),
        None => None,
    };
    let text = format!(
        "{}{extra_toml}",
        switch_config_toml_tls(dir, &ports, tls, partner.addr)
    );
    let config_path = dir.join("cyberswitch.toml");
    std::fs::write(&config_path, &text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = Config::from_toml(&text, &config_path).map_err(|e| e.to_string())?;
    let running = crate::daemon::start(config, stop.clone()).await?;
    if fresh {
        for (card, issuer, account, priority, label) in DEMO_LINKS {
            let pan = Pan::parse(card.as_bytes()).map_err(|e| e.to_string())?;
            running.switch.directory.link(
                &pan,
                WalletLink {
                    label: label.to_string(),
                    ..WalletLink::active(issuer, account, *priority, "demo")
                },
                "demo",
                |_| true,
            )?;
        }
        seed_prepaid(&running.switch.hosted).await?;
        seed_virtual_accounts(&running.switch.va).await?;
    }
    // Wait until every link has signed on, so the first request finds them up.
    for _ in 0..100 {
        if running.switch.links.values().all(|l| l.is_up()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(Demo {
        running,
        sims,
        metrics,
        dir: dir.to_path_buf(),
        partner,
    })
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

/// The demo's card key, admin tokens (operator, partner DEMOMALL, issuer EMONEY) and terminal
/// PIN key: random, kept with its data (never
/// in the source), made once per directory.
pub fn write_secrets(dir: &Path) -> Result<(), String> {
    let card_key: [u8; 32] = rand::random();
    let token: [u8; 24] = rand::random();
    let issuer: [u8; 24] = rand::random();
    let pin_key: [u8; 16] = rand::random();
    let partner_token: [u8; 24] = rand::random();
    let partner_secret: [u8; 24] = rand::random();
    for (name, value) in [
        ("card.key", hex::encode(card_key)),
        ("operator.token", hex::encode(token)),
        ("partner.token", hex::encode(partner_token)),
        ("partner.secret", hex::encode(partner_secret)),
        ("issuer-emoney.token", hex::encode(issuer)),
        ("terminal-pin.key", hex::encode_upper(pin_key)),
    ] {
        let path = dir.join(name);
        if !path.exists() {
            write_private(&path, &value)?;
        }
    }
    Ok(())
}

/// Read one of the demo's secrets (operator token, terminal PIN key).
pub fn secret(dir: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(name))
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("{}: {e}", dir.join(name).display()))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}
