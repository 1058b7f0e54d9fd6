//! TLS everywhere (SPEC §10, issue 21): terminal listeners (and mutual TLS), upstream links
//! verified against their CA, the admin API over HTTPS, SIGHUP reloading the files. Real TCP,
//! real RocksDB in temp dirs, the bundled simulators; certificates from the project's own
//! small CA (`net::pki`, rcgen).
//!
//! Its own test binary: it installs a process-wide log subscriber that keeps what is logged,
//! to check that no key material reaches the logs, and it sends itself SIGHUP.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cyberswitch::admin::client::ApiClient;
use cyberswitch::config::Config;
use cyberswitch::demo::{self, Demo, DemoPorts, DemoTls};
use cyberswitch::iso8583::{Mti, OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use cyberswitch::net::pki::Ca;
use cyberswitch::net::tls::{ClientTls, ClientTlsFiles};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
/// Plain credit: the acquirer approves.
const PLAIN_CARD: &str = "9410000000000021";
/// One e-money wallet, E-1002 (5,000), at the EMONEY issuer.
const EMONEY_CARD: &str = "9410000000000039";

// --- Logs kept for the no-secrets check ---------------------------------------------------

#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<u8>>>);

impl Write for Kept {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this process so far (info and up, every target).
fn logs() -> String {
    static LOGS: OnceLock<Kept> = OnceLock::new();
    let kept = LOGS.get_or_init(|| {
        let kept = Kept::default();
        let writer = kept.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        kept
    });
    String::from_utf8_lossy(&kept.0.lock().unwrap()).into_owned()
}

// --- Helpers ------------------------------------------------------------------------------

fn spec() -> Arc<Spec> {
    Arc::new(Spec::resolve("iso87-ascii").unwrap())
}

fn purchase(card: &str, amount: u64, stan: u32, tags: &[(&str, &str)]) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(b"0200").unwrap());
    m.set(2, card.as_bytes())
        .set(3, b"000000")
        .set_number(4, amount, 12)
        .set(7, b"1121120000")
        .set_number(11, u64::from(stan), 6)
        .set(12, b"120000")
        .set(13, b"1121")
        .set(41, b"TERM0001")
        .set(42, b"MERCHANT0000001")
        .set(49, b"410");
    common::with_tags(m, tags)
}

/// Write a CA's certificate to `dir/<name>.pem`.
fn write_ca(ca: &Ca, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, ca.cert_pem()).unwrap();
    path
}

/// The demo with its TLS listener and HTTPS admin API (ephemeral ports), and `extra` TOML.
async fn tls_demo(dir: &Path, stop: &CancellationToken, extra: &str) -> Demo {
    logs();
    demo::start_full(
        dir,
        DemoPorts::ephemeral(),
        &DemoTls::ephemeral(),
        stop.clone(),
        |_| {},
        extra,
    )
    .await
    .unwrap()
}

/// A client over TLS presenting `cert`/`key` (mutual TLS) or no certificate.
async fn client_with(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(PathBuf, PathBuf)>,
) -> Result<Client, String> {
    let (cert, key) = match cert {
        Some((c, k)) => (Some(c), Some(k)),
        None => (None, None),
    };
    let tls = ClientTls::load(ClientTlsFiles {
        ca: ca.to_path_buf(),
        cert,
        key,
        server_name: None,
    })?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let stream = tls.connect(&addr.to_string(), tcp).await?;
    Ok(Client::over(
        Box::new(stream),
        spec(),
        "binary2".parse().unwrap(),
    ))
}

// --- Terminal listeners -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminal_over_tls_is_approved_and_the_plain_listener_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let demo = tls_demo(dir.path(), &stop, "").await;
    let tls_addr = demo.tls_switch_addr().expect("the TLS listener is up");
    // The demo's CA is where the README says.
    assert_eq!(demo.ca(), dir.path().join("tls").join("ca.pem"));

    let mut over_tls = Client::connect_tls(
        &tls_addr.to_string(),
        Some(&demo.ca()),
        spec(),
        "binary2".parse().unwrap(),
    )
    .await
    .unwrap();
    let answer = over_tls
        .call(&purchase(PLAIN_CARD, 20_000, 1, &[]), WAIT)
        .await
        .unwrap();
    assert_eq!(answer.mti().as_str(), "0210");
    assert_eq!(common::code(&answer), "00");

    // A wallet purchase over TLS too: money moves at the issuer.
    let before = demo.sim("EMONEY").unwrap().balance("E-1002").unwrap();
    let answer = over_tls
        .call(&purchase(EMONEY_CARD, 1_000, 2, &[("WS", "E-1002")]), WAIT)
        .await
        .unwrap();
    assert_eq!(common::code(&answer), "00");
    assert_eq!(
        demo.sim("EMONEY").unwrap().balance("E-1002").unwrap(),
        before - 1_000
    );

    // The plain listener beside it still answers (leased lines).
    let mut plain = Client::connect(
        &demo.switch_addr().to_string(),
        spec(),
        "binary2".parse().unwrap(),
    )
    .await
    .unwrap();
    let answer = plain
        .call(&purchase(PLAIN_CARD, 20_000, 3, &[]), WAIT)
        .await
        .unwrap();
    assert_eq!(common::code(&answer), "00");

    // Plain bytes to the TLS port get no ISO 8583 answer.
    let mut wrong = Client::connect(&tls_addr.to_string(), spec(), "binary2".parse().unwrap())
        .await
        .unwrap();
    let sent = wrong.send(&purchase(PLAIN_CARD, 20_000, 4, &[])).await;
    if sent.is_ok() {
        let got = wrong.recv(WAIT).await;
        assert!(
            got.is_err(),
            "a plain request on the TLS port was answered: {got:?}"
        );
    }

    // A client trusting another CA refuses the switch.
    let other = Ca::new("someone else").unwrap();
    let other_ca = write_ca(&other, dir.path(), "other-ca");
    let refused = Client::connect_tls(
        &tls_addr.to_string(),
        Some(&other_ca),
        spec(),
        "binary2".parse().unwrap(),
    )
    .await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    // A VAN listener requiring client certificates from the VAN's CA.
    let server_ca = Ca::new("switch CA").unwrap();
    let van_ca = Ca::new("VAN CA").unwrap();
    let (cert, key) = server_ca
        .server(&["127.0.0.1"])
        .unwrap()
        .write(dir.path(), "van-listener")
        .unwrap();
    let server_ca_file = write_ca(&server_ca, dir.path(), "switch-ca");
    let van_ca_file = write_ca(&van_ca, dir.path(), "van-ca");
    let van_client = van_ca
        .client("van-1")
        .unwrap()
        .write(dir.path(), "van-1")
        .unwrap();
    // A certificate from another CA is no better than none.
    let stranger = Ca::new("stranger CA")
        .unwrap()
        .client("stranger")
        .unwrap()
        .write(dir.path(), "stranger")
        .unwrap();
    let data = dir.path().join("demo");
    let extra = format!(
        r#"
[[listener]]
name = "van"
addr = "127.0.0.1:0"
max_connections = 100
tls = {{ cert = "{}", key = "{}", client_ca = "{}" }}
"#,
        cert.display(),
        key.display(),
        van_ca_file.display()
    );
    let demo = tls_demo(&data, &stop, &extra).await;
    let van = demo
        .running
        .addrs
        .iter()
        .find(|(n, _)| n == "van")
        .unwrap()
        .1;

    // No certificate: the handshake or the first exchange fails; nothing is answered.
    match client_with(van, &server_ca_file, None).await {
        Err(_) => {}
        Ok(mut c) => {
            let got = c.call(&purchase(PLAIN_CARD, 20_000, 1, &[]), WAIT).await;
            assert!(
                got.is_err(),
                "a client without a certificate was answered: {got:?}"
            );
        }
    }
    match client_with(van, &server_ca_file, Some(stranger)).await {
        Err(_) => {}
        Ok(mut c) => {
            let got = c.call(&purchase(PLAIN_CARD, 20_000, 2, &[]), WAIT).await;
            assert!(
                got.is_err(),
                "a stranger's certificate was answered: {got:?}"
            );
        }
    }
    // The VAN's certificate: served.
    let mut c = client_with(van, &server_ca_file, Some(van_client))
        .await
        .unwrap();
    let answer = c
        .call(&purchase(PLAIN_CARD, 20_000, 3, &[]), WAIT)
        .await
        .unwrap();
    assert_eq!(common::code(&answer), "00");
}

// --- Upstream links -------------------------------------------------------------------------

/// The demo's simulators with the acquirer ACQ1 behind TLS (its certificate from its own CA,
/// for 127.0.0.1), and the switch's `acq1` link trusting that CA or another one. Plain credit
/// cards go to the acquirer alone (F6): their answers say whether the link works.
async fn demo_with_tls_acquirer(
    dir: &Path,
    stop: &CancellationToken,
    trust_right_ca: bool,
) -> Demo {
    logs();
    let sim_ca = Ca::new("ACQ1's CA").unwrap();
    let (cert, key) = sim_ca
        .server(&["127.0.0.1"])
        .unwrap()
        .write(dir, "acq1-sim")
        .unwrap();
    let right = write_ca(&sim_ca, dir, "acq1-ca");
    let wrong = write_ca(&Ca::new("not ACQ1's CA").unwrap(), dir, "wrong-ca");
    let link_ca = if trust_right_ca { right } else { wrong };
    let data = dir.join("demo");
    std::fs::create_dir_all(&data).unwrap();
    demo::write_secrets(&data).unwrap();
    let mut ports = DemoPorts::ephemeral();
    let mut configs = demo::sim_configs(&data, &ports);
    for c in configs.iter_mut().filter(|c| c.name == "ACQ1") {
        c.tls = Some(cyberswitch::net::tls::ServerTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        });
    }
    let sims = demo::start_sims(configs, &mut ports, stop).await.unwrap();
    // The acquirer link over TLS; it retries quickly (the wrong CA never connects).
    let toml = demo::switch_config_toml(&data, &ports).replacen(
        "name = \"acq1\"\nkind = \"acquirer\"\n",
        &format!(
            "name = \"acq1\"\nkind = \"acquirer\"\nreconnect_max_ms = 500\ntls = {{ ca = \"{}\" }}\n",
            link_ca.display()
        ),
        1,
    );
    assert!(toml.contains("tls = { ca"), "the link's table was found");
    let path = data.join("cyberswitch.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = Config::from_toml(&toml, &path).unwrap();
    let running = cyberswitch::daemon::start(config, stop.clone())
        .await
        .unwrap();
    for (card, issuer, account, priority, label) in demo::DEMO_LINKS {
        let pan = cyberswitch::iso8583::Pan::parse(card.as_bytes()).unwrap();
        running
            .switch
            .directory
            .link(
                &pan,
                cyberswitch::directory::WalletLink {
                    label: label.to_string(),
                    ..cyberswitch::directory::WalletLink::active(issuer, account, *priority, "test")
                },
                "test",
                |_| true,
            )
            .unwrap();
    }
    let partner = cyberswitch::sim::partner::PartnerSim::start(
        "127.0.0.1:0".parse().unwrap(),
        &demo::secret(&data, "partner.secret").unwrap(),
        false,
        stop.clone(),
    )
    .await
    .unwrap();
    Demo {
        running,
        sims,
        metrics: None,
        dir: data,
        partner,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_link_over_tls_with_the_wrong_ca_fails_and_the_terminal_gets_91() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let demo = demo_with_tls_acquirer(dir.path(), &stop, false).await;
    // The link tries and fails until a handshake failure is logged; it never comes up.
    let refused = || {
        logs()
            .lines()
            .any(|l| l.contains("TLS handshake failed") && l.contains("link=acq1"))
    };
    for _ in 0..200 {
        if refused() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused(), "the failed handshake is logged");
    assert!(!demo.running.switch.links["acq1"].is_up());
    let mut t = Client::connect(
        &demo.switch_addr().to_string(),
        spec(),
        "binary2".parse().unwrap(),
    )
    .await
    .unwrap();
    let answer = t
        .call(&purchase(PLAIN_CARD, 20_000, 1, &[]), WAIT)
        .await
        .unwrap();
    assert_eq!(common::code(&answer), "91", "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_link_over_tls_with_the_right_ca_is_approved() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let demo = demo_with_tls_acquirer(dir.path(), &stop, true).await;
    let link = demo.running.switch.links["acq1"].clone();
    for _ in 0..200 {
        if link.is_up() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(link.is_up(), "the link signed on over TLS");
    let mut t = Client::connect(
        &demo.switch_addr().to_string(),
        spec(),
        "binary2".parse().unwrap(),
    )
    .await
    .unwrap();
    let answer = t
        .call(&purchase(PLAIN_CARD, 20_000, 1, &[]), WAIT)
        .await
        .unwrap();
    assert_eq!(common::code(&answer), "00", "{answer:?}");
    // A split tender too: e-money (plain link) then the credit over TLS.
    let before = demo.sim("EMONEY").unwrap().balance("E-1002").unwrap();
    let answer = t
        .call(&purchase(EMONEY_CARD, before as u64 + 2_000, 2, &[]), WAIT)
        .await
        .unwrap();
    assert_eq!(common::code(&answer), "00", "{answer:?}");
    assert_eq!(demo.sim("EMONEY").unwrap().balance("E-1002").unwrap(), 0);
}

// --- Admin API ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_api_over_https_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let demo = tls_demo(dir.path(), &stop, "").await;
    let admin = demo.running.admin.unwrap();
    let token = demo::secret(dir.path(), "operator.token").unwrap();
    let url = format!("https://{admin}");

    let api = ApiClient::new(&url, Some(token.clone()))
        .unwrap()
        .with_ca(Some(demo.ca()));
    let r = api.call("get", "/v1/health", None).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Without the CA the client refuses to guess; with another CA the handshake fails.
    let no_ca = ApiClient::new(&url, Some(token.clone())).unwrap();
    assert!(no_ca.call("get", "/v1/health", None).await.is_err());
    let other_ca = write_ca(&Ca::new("other").unwrap(), dir.path(), "other-ca");
    let wrong = ApiClient::new(&url, Some(token.clone()))
        .unwrap()
        .with_ca(Some(other_ca));
    assert!(wrong.call("get", "/v1/health", None).await.is_err());
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = ApiClient::new(&format!("http://{admin}"), Some(token.clone())).unwrap();
    assert!(plain.call("get", "/v1/health", None).await.is_err());

    // The command line: `cyberswitch api --ca FILE`.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
        .args(["api", "--url", &url, "--ca"])
        .arg(demo.ca())
        .args(["link-list", "--card", "9410000000000013"])
        .env("CYBERSWITCH_TOKEN", &token)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("G-3001"), "{listed}");
}

// --- SIGHUP -------------------------------------------------------------------------------

/// Whether a TLS client trusting `ca` completes an exchange with the listener at `addr`.
async fn served(addr: SocketAddr, ca: &Path) -> bool {
    let Ok(mut c) = Client::connect_tls(
        &addr.to_string(),
        Some(ca),
        spec(),
        "binary2".parse().unwrap(),
    )
    .await
    else {
        return false;
    };
    let mut echo = OwnedMessage::new(Mti::new(b"0800").unwrap());
    echo.set(7, b"1121120000")
        .set(11, b"000001")
        .set(41, b"TERM0001")
        .set(70, b"301");
    c.call(&echo, WAIT).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let old_ca = Ca::new("old CA").unwrap();
    let new_ca = Ca::new("new CA").unwrap();
    let old_ca_file = write_ca(&old_ca, dir.path(), "old-ca");
    let new_ca_file = write_ca(&new_ca, dir.path(), "new-ca");
    let (cert, key) = old_ca
        .server(&["127.0.0.1"])
        .unwrap()
        .write(dir.path(), "listener")
        .unwrap();
    let extra = format!(
        "\n[[listener]]\nname = \"renewed\"\naddr = \"127.0.0.1:0\"\nmax_connections = 100\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let demo = tls_demo(&dir.path().join("demo"), &stop, &extra).await;
    let addr = demo
        .running
        .addrs
        .iter()
        .find(|(n, _)| n == "renewed")
        .unwrap()
        .1;
    assert!(served(addr, &old_ca_file).await);
    assert!(!served(addr, &new_ca_file).await);

    // A renewed certificate (from a new CA) in the same files, then SIGHUP.
    let renewed = new_ca.server(&["127.0.0.1"]).unwrap();
    renewed.write(dir.path(), "listener").unwrap();
    // SAFETY: kill(2) on this very process; the daemon's SIGHUP handler is installed.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    let mut reloaded = false;
    for _ in 0..100 {
        if served(addr, &new_ca_file).await {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reloaded,
        "new connections use the new certificate after SIGHUP"
    );
    assert!(!served(addr, &old_ca_file).await);

    // A bad key file: the reload says which file and why, and the listener keeps serving
    // with what it had.
    std::fs::write(&key, "not a key at all\n").unwrap();
    let outcome = cyberswitch::daemon::reload_tls(&demo.running.switch.config);
    let failure = outcome.failed.join("\n");
    assert!(
        failure.contains("listener renewed") && failure.contains("listener.key"),
        "{failure}"
    );
    assert!(served(addr, &new_ca_file).await);

    // No key material in the logs: neither the listener's keys nor the demo's secrets.
    let logged = logs();
    assert!(
        logged.contains("TLS files not reloaded"),
        "the failure is logged"
    );
    let key_lines = |pem: &str| -> Vec<String> {
        pem.lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_string)
            .collect()
    };
    for line in key_lines(&renewed.key_pem) {
        assert!(!logged.contains(&line), "a private key line was logged");
    }
    assert!(!logged.contains("-----BEGIN"), "a PEM section was logged");
    for secret in ["card.key", "operator.token", "terminal-pin.key"] {
        let value = demo::secret(&dir.path().join("demo"), secret).unwrap();
        assert!(!logged.contains(&value), "{secret} was logged");
    }
}

// --- Versioned card keys --------------------------------------------------------------------

/// `cyberswitch run --config PATH` once it says it is ready; its logs are kept in `logs`.
async fn switch_process(path: &Path, logs: &Arc<Mutex<String>>) -> tokio::process::Child {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
        .arg("run")
        .arg("--config")
        .arg(path)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let kept = logs.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut l = kept.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = stdout.next_line().await {
            if line.contains("cyberswitch ready") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        ready,
        Ok(true),
        "switch did not start:\n{}",
        logs.lock().unwrap()
    );
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    child
}

/// SIGTERM, and the graceful stop awaited.
async fn stop_process(mut child: tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the switch stopped")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

async fn pay(addr: SocketAddr, card: &str, wallet: &str, stan: u32) -> String {
    let mut t = Client::connect(&addr.to_string(), spec(), "binary2".parse().unwrap())
        .await
        .unwrap();
    let answer = t
        .call(&purchase(card, 1_000, stan, &[("WS", wallet)]), WAIT)
        .await
        .unwrap();
    common::code(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_keeps_every_link_and_new_records_name_the_new_version() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let sims_stop = CancellationToken::new();
    let _sims_stop = sims_stop.clone().drop_guard();
    let data = dir.path().join("demo");
    std::fs::create_dir_all(&data).unwrap();
    demo::write_secrets(&data).unwrap();
    let mut ports = DemoPorts::ephemeral();
    ports.switch = common::free_port();
    let configs = demo::sim_configs(&data, &ports);
    let _sims = demo::start_sims(configs, &mut ports, &sims_stop)
        .await
        .unwrap();
    let addr = ports.switch;
    let v1_toml = demo::switch_config_toml(&data, &ports);
    let v2_key: [u8; 32] = rand::random();
    let v2_toml = format!(
        "{v1_toml}\n[keys]\ncurrent = 2\n\n[[keys.card]]\nversion = 2\nvalue = \"{}\"\n",
        hex::encode(v2_key)
    );
    let v1_path = data.join("v1.toml");
    let v2_path = data.join("v2.toml");
    std::fs::write(&v1_path, &v1_toml).unwrap();
    std::fs::write(&v2_path, &v2_toml).unwrap();
    let wallets = [
        ("9410000000000013", "G-3001"),
        ("9410000000000013", "E-1001"),
        ("9410000000000039", "E-1002"),
    ];
    let logs = Arc::new(Mutex::new(String::new()));

    // Version 1: the demo's links (written before the switch starts), and purchases.
    {
        let config = Config::from_toml(&v1_toml, &v1_path).unwrap();
        let store = cyberswitch::store::open(&config.data_dir).unwrap();
        let directory = cyberswitch::directory::Directory::new(store, config.card_key_chain());
        for (card, issuer, account, priority, label) in demo::DEMO_LINKS {
            let pan = cyberswitch::iso8583::Pan::parse(card.as_bytes()).unwrap();
            directory
                .link(
                    &pan,
                    cyberswitch::directory::WalletLink {
                        label: label.to_string(),
                        ..cyberswitch::directory::WalletLink::active(
                            issuer, account, *priority, "test",
                        )
                    },
                    "test",
                    |_| true,
                )
                .unwrap();
        }
    }
    let switch = switch_process(&v1_path, &logs).await;
    for (i, (card, wallet)) in wallets.iter().enumerate() {
        assert_eq!(pay(addr, card, wallet, 100 + i as u32).await, "00");
    }
    stop_process(switch).await;

    // Version 2 made current, not rotated yet: every link still resolves (older versions
    // are looked up).
    let switch = switch_process(&v2_path, &logs).await;
    for (i, (card, wallet)) in wallets.iter().enumerate() {
        assert_eq!(pay(addr, card, wallet, 200 + i as u32).await, "00");
    }
    stop_process(switch).await;

    // `cyberswitch keys rotate`, offline.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
        .args(["keys", "rotate", "--config"])
        .arg(&v2_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("card key version 2: 3 card link records"),
        "{said}"
    );
    // Every record now names version 2; no bare (version 1) reference is left.
    {
        let store = cyberswitch::store::open_read_only(&data.join("switch")).unwrap();
        let records = store.scan(cyberswitch::store::Cf::CardLinks, b"").unwrap();
        assert_eq!(records.len(), 3);
        for (k, _) in &records {
            let (version, _) = cyberswitch::directory::parse_stored(k).unwrap();
            assert_eq!(version, 2);
        }
    }

    // After the rotation: every card still pays with its wallets.
    let switch = switch_process(&v2_path, &logs).await;
    for (i, (card, wallet)) in wallets.iter().enumerate() {
        assert_eq!(pay(addr, card, wallet, 300 + i as u32).await, "00");
    }
    stop_process(switch).await;
    // A second rotation finds nothing to move.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
        .args(["keys", "rotate", "--config"])
        .arg(&v2_path)
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 0 card link records"));

    // No key in the switch's logs.
    let logged = logs.lock().unwrap().clone();
    assert!(logged.contains("listening"), "the logs were kept");
    assert!(
        !logged.contains(&hex::encode(v2_key)),
        "the new card key was logged"
    );
    let v1 = demo::secret(&data, "card.key").unwrap();
    assert!(!logged.contains(&v1), "the old card key was logged");
}
