//! Helpers shared by the integration test binaries.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

mod demo_env;

// Like the rest of this module, used by some test binaries and not others.
#[allow(unused_imports)]
pub use demo_env::*;

use std::collections::HashSet;
use std::path::Path;

use cyberswitch::iso8583::{Mti, OriginalData, OwnedMessage};

/// A terminal's reversal (0400) of `original`: its card and amount fields, a new STAN and
/// transmission time, and field 90 naming the original.
pub fn reversal_of(original: &OwnedMessage, stan: u64, transmission_time: &str) -> OwnedMessage {
    let mut r = OwnedMessage::new(Mti::new(b"0400").unwrap());
    for n in [2, 3, 4, 41, 42, 49] {
        if let Some(v) = original.get(n) {
            r.set(n, v);
        }
    }
    r.set(7, transmission_time.as_bytes())
        .set_number(11, stan, 6);
    r.set_original_data(&original_data_of(original));
    r
}

/// What field 90 says of `original`: its MTI, STAN and transmission time.
pub fn original_data_of(original: &OwnedMessage) -> OriginalData {
    OriginalData {
        mti: original.mti(),
        stan: number(original, 11) as u32,
        transmission_time: number(original, 7),
        acquirer_id: 0,
        forwarder_id: 0,
    }
}

/// A terminal's request without a card: processing code, amount, transmission time now,
/// `stan`, local time and date, terminal and merchant, currency 410 (the demo's).
pub fn terminal_request(
    mti: &[u8; 4],
    pc: &str,
    amount: u64,
    stan: u32,
    terminal: &str,
    merchant: &str,
) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
    m.set(3, pc.as_bytes())
        .set_number(4, amount, 12)
        .set(7, cyberswitch::clock::transmission_time().as_bytes())
        .set_number(11, u64::from(stan), 6)
        .set(12, b"120000")
        .set(13, b"1206")
        .set(41, terminal.as_bytes())
        .set(42, merchant.as_bytes())
        .set(49, b"410");
    m
}

/// A completion (0220) of `auth` for `taken`, naming it in field 90.
pub fn completion_of(auth: &OwnedMessage, taken: i64, stan: u32) -> OwnedMessage {
    let mut c = reversal_of(
        auth,
        u64::from(stan),
        &cyberswitch::clock::transmission_time(),
    );
    c.set_mti(Mti::new(b"0220").unwrap());
    c.set_number(4, taken as u64, 12);
    c
}

/// Field 4 as a number.
pub fn amount_of(m: &OwnedMessage) -> i64 {
    std::str::from_utf8(m.get(4).unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

/// The crash harnesses' random seed: `CRASH_SEED` when set (to repeat a run), else random.
pub fn seed() -> u64 {
    let s = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash harness seed {s} (CRASH_SEED={s} repeats it)");
    s
}

/// `m` with field 48 holding these switch-data elements (SPEC §4.3).
pub fn with_tags(mut m: OwnedMessage, tags: &[(&str, &str)]) -> OwnedMessage {
    let mut sd = cyberswitch::iso8583::tlv::SwitchData::new();
    for (t, v) in tags {
        sd.push(t, v.as_bytes());
    }
    m.set(48, sd.as_bytes());
    m
}

/// Field 39 as text (empty when absent).
pub fn code(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.get(39).unwrap_or(b"")).into_owned()
}

/// The values of one field 48 tag, in order.
pub fn tags(m: &OwnedMessage, tag: &str) -> Vec<String> {
    cyberswitch::iso8583::tlv::parse_ascii_tlv(m.get(48).unwrap_or(b""), 2, 3)
        .unwrap()
        .into_iter()
        .filter(|e| e.tag == tag.as_bytes())
        .map(|e| String::from_utf8_lossy(e.value).into_owned())
        .collect()
}

/// No file under `dir`, and no log line, holds a card number in ASCII or packed BCD.
/// Returns how many files were scanned.
pub fn scan_for_card_numbers(dir: &Path, pans: &[&str], logs: &str) -> Result<usize, String> {
    let ascii: HashSet<Vec<u8>> = pans.iter().map(|p| p.as_bytes().to_vec()).collect();
    let bcd: HashSet<Vec<u8>> = pans
        .iter()
        .map(|pan| {
            pan.as_bytes()
                .chunks(2)
                .map(|p| ((p[0] - b'0') << 4) | p.get(1).map_or(0x0f, |d| d - b'0'))
                .collect()
        })
        .collect();
    let find = |bytes: &[u8]| -> Option<String> {
        for (set, form) in [(&ascii, "ascii"), (&bcd, "bcd")] {
            let Some(len) = set.iter().next().map(Vec::len) else {
                continue;
            };
            let prefixes: HashSet<&[u8]> = set.iter().map(|p| &p[..3]).collect();
            for (i, w) in bytes.windows(3).enumerate() {
                if prefixes.contains(w) && bytes.get(i..i + len).is_some_and(|c| set.contains(c)) {
                    let around = &bytes[i.saturating_sub(120)..(i + 60).min(bytes.len())];
                    return Some(format!(
                        "a card number ({form}) at offset {i}: …{}…",
                        String::from_utf8_lossy(around).escape_debug()
                    ));
                }
            }
        }
        None
    };
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            files += 1;
            if let Some(what) = find(&bytes) {
                return Err(format!("{} holds {what}", path.display()));
            }
        }
    }
    if let Some(what) = find(logs.as_bytes()) {
        return Err(format!("the switch logged {what}"));
    }
    Ok(files)
}

#[test]
fn the_scan_finds_planted_card_numbers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clean"), b"941000******0013").unwrap();
    assert_eq!(
        scan_for_card_numbers(dir.path(), &["9410000000000013"], ""),
        Ok(1)
    );
    std::fs::write(
        dir.path().join("bcd"),
        [0u8, 0x94, 0x10, 0, 0, 0, 0, 0, 0x13, 1],
    )
    .unwrap();
    assert!(scan_for_card_numbers(dir.path(), &["9410000000000013"], "").is_err());
    std::fs::remove_file(dir.path().join("bcd")).unwrap();
    assert!(
        scan_for_card_numbers(dir.path(), &["9410000000000013"], "x 9410000000000013").is_err()
    );
}

/// SIGTERM to a child process (a graceful stop); false when it is gone already.
pub fn sigterm(child: &tokio::process::Child) -> bool {
    let Some(pid) = child.id() else {
        return false;
    };
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// `cyberswitch demo --data-dir DIR --ephemeral-ports` as a child process (SIGKILLed when
/// dropped), once it has printed that it is ready: the child and the lines it printed.
pub async fn spawn_demo(dir: &Path) -> (tokio::process::Child, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyberswitch"))
        .arg("demo")
        .arg("--data-dir")
        .arg(dir)
        .arg("--ephemeral-ports")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = stdout.next_line().await {
            let done = line.contains("cyberswitch ready");
            printed.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the demo did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    (child, printed)
}

/// The address the demo printed after `prefix` ("switch on ", "admin API on http://" …).
pub fn printed_addr(printed: &[String], prefix: &str) -> Option<std::net::SocketAddr> {
    printed.iter().find_map(|line| {
        line.strip_prefix(prefix)?
            .split(['/', ' '])
            .next()?
            .parse()
            .ok()
    })
}

/// The sum of one metric's samples (every label set) from a `/metrics` endpoint; `None` when
/// it cannot be read.
pub async fn metric_sum(metrics: std::net::SocketAddr, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(metrics).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    let prefix = format!("{name}{{");
    Some(
        body.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// A port for a child process started later (and again after every kill) to listen on,
/// picked below the kernel's ephemeral range. A port found by binding port 0 comes from that
/// range, and an outgoing connection made meanwhile (a relay's, a link's) may be given it
/// before the child binds it (seen: "admin API: bind …: Address already in use"); ports
/// below the range are only ever taken by an explicit bind.
pub fn free_port() -> std::net::SocketAddr {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let from = 10_000u16.min(ephemeral_from.saturating_sub(1_000));
    for _ in 0..1_000 {
        let port = rand::random_range(from..ephemeral_from);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free port below {ephemeral_from}");
}
