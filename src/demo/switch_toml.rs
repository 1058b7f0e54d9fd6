//! The demo switch's configuration, as the TOML text written into its data directory.

use std::net::SocketAddr;
use std::path::Path;

use super::{DemoPorts, DemoTls, DEMO_VA};

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
            "[[link]]\nname = \"{name}\"\nkind = \"{kind}\"\nhosts = [\"{addr}\"]\ntimeout_ms = 1500\necho_interval_ms = 30000\n# The simulators find a leg by field 37 alone: legs go ahead of their record.\nlegs_ahead = 64\n\n"
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
