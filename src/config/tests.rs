use std::path::Path;
use std::sync::Arc;

use super::*;

const CARD_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const PIN_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";

fn base() -> String {
    format!(
        "data_dir = \"x\"\ncard_key = \"{CARD_KEY}\"\n\
         [[link]]\nname = \"acq1\"\nkind = \"acquirer\"\nhosts = [\"127.0.0.1:1\"]\n"
    )
}

fn load(extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("{}{extra}", base()), Path::new("conf/t.toml"))
}

fn refusal(extra: &str) -> String {
    match load(extra) {
        Ok(_) => panic!("accepted: {extra}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_listener_carries_the_profile_its_spec_and_framing_name() {
    let c = load(
        "[[listener]]\nname = \"a\"\naddr = \"127.0.0.1:0\"\nspec = \"iso93-ascii\"\n\
         framing = \"ascii4\"\nmax_frame = 4096\n\
         [[listener]]\nname = \"b\"\naddr = \"127.0.0.1:0\"\nspec = \"iso93-ascii\"\n",
    )
    .unwrap();
    let (a, b) = (&c.listeners[0].profile, &c.listeners[1].profile);
    assert_eq!(a.spec.name, "iso93-ascii");
    assert_eq!(a.framing, "ascii4".parse().unwrap());
    assert_eq!(a.max_frame, 4096);
    // Unnamed: the defaults.
    assert_eq!(b.framing, "binary2".parse().unwrap());
    assert_eq!(b.max_frame, crate::net::framing::DEFAULT_MAX_FRAME);
    // Loaded once for both.
    assert!(Arc::ptr_eq(&a.spec, &b.spec));
}

#[test]
fn links_and_in_process_links_carry_their_profiles() {
    let c = load("").unwrap();
    let link = &c.links[0];
    assert_eq!(link.profile.spec.name, "iso87-ascii");
    assert_eq!(link.profile.framing, "binary2".parse().unwrap());
    assert_eq!(
        link.match_key,
        [
            MatchField::MtiClass,
            MatchField::Field(11),
            MatchField::Field(41)
        ]
    );
    assert_eq!(c.local_profile.spec.name, "iso87-ascii");
    assert!(Arc::ptr_eq(&link.profile.spec, &c.local_profile.spec));
    let local = LinkConfig::local("H", c.local_profile.clone());
    assert_eq!(local.match_key, link.match_key);
    assert_eq!(local.timeout_ms, link.timeout_ms);
    assert_eq!(local.max_in_flight, link.max_in_flight);
}

#[test]
fn keys_are_read_at_load_and_never_printed() {
    let c = load(&format!(
        "[[listener]]\nname = \"t\"\naddr = \"127.0.0.1:0\"\npin_key = {{ value = \"{PIN_KEY}\" }}\n\
         [admin]\naddr = \"127.0.0.1:0\"\nrate_per_token_s = 7\n\
         [[admin.token]]\nname = \"ops\"\nrole = \"operator\"\n\
         token = {{ value = \"a-token-long-enough\" }}\n"
    ))
    .unwrap();
    assert_eq!(c.card_key.expose(), hex::decode(CARD_KEY).unwrap());
    assert!(c.listeners[0].pin_key.is_some());
    let admin = c.admin.as_ref().unwrap();
    assert_eq!(admin.tokens[0].token.expose(), "a-token-long-enough");
    assert_eq!(admin.tokens[0].rate_per_s.get(), 7);
    let printed = format!("{c:?}");
    for secret in [CARD_KEY, "000102030405", PIN_KEY, "a-token-long-enough"] {
        assert!(!printed.contains(secret), "{secret} printed");
    }
}

#[test]
fn numbers_out_of_range_are_refused_with_their_key() {
    let listener = "[[listener]]\nname = \"t\"\naddr = \"127.0.0.1:0\"\n";
    let cases = [
        (format!("{listener}max_in_flight = 0\n"), "listener[0].max_in_flight: must be at least 1"),
        (format!("{listener}max_connections = 0\n"), "listener[0].max_connections: must be at least 1"),
        (format!("{listener}max_connections = 5000000\n"), "listener[0].max_connections: must be at most 1000000"),
        (format!("{listener}idle_timeout_ms = 0\n"), "listener[0].idle_timeout_ms: must be at least 1"),
        (format!("{listener}max_frame = 0\n"), "listener[0].max_frame: must be at least 1"),
        ("[processing_codes]\ninquiry = [31, 100]\n".into(), "processing_codes.inquiry: must be at most 99"),
        ("[hosted]\npin_tries = 0\n".into(), "hosted.pin_tries: must be at least 1"),
        ("[hosted]\nhold_ttl_s = 0\n".into(), "hosted.hold_ttl_s: must be at least 1"),
        ("[[hosted.program]]\nid = \"P\"\nkind = \"prepaid\"\nbin_from = \"627\"\nbin_to = \"627\"\nvalidity_months = 0\n".into(), "hosted.program[0].validity_months: must be at least 1"),
        ("[admin]\naddr = \"127.0.0.1:0\"\nidle_timeout_s = 99999999999\n".into(), "admin.idle_timeout_s: must be at most 86400"),
        ("[limits]\njournal_batch_max = 0\n".into(), "limits: saf_expiry_s, journal_batch_max and duplicate_window_s must be at least 1"),
        ("[limits]\njournal_sync_delay_us = 10001\n".into(), "limits.journal_sync_delay_us: at most 10000 (10 ms): a longer wait only holds every synced step"),
    ];
    for (extra, expected) in cases {
        let e = refusal(&extra);
        assert!(e.starts_with("conf/t.toml: "), "{e}");
        assert!(e.contains(expected), "{e:?} does not contain {expected:?}");
    }
    let currency = format!("currency = 4100\n{}", base());
    let e = Config::from_toml(&currency, Path::new("conf/t.toml")).unwrap_err();
    assert_eq!(e.to_string(), "conf/t.toml: currency: must be at most 999");
}

#[test]
fn link_settings_out_of_range_are_refused_with_their_key() {
    let link = |setting: &str| {
        format!("[[link]]\nname = \"l\"\nkind = \"issuer\"\nhosts = [\"127.0.0.1:2\"]\n{setting}\n")
    };
    let cases = [
        ("sessions = 0", "link[1].sessions: must be at least 1"),
        (
            "max_in_flight = 0",
            "link[1].max_in_flight: must be at least 1",
        ),
        (
            "max_in_flight = 99999999999",
            "link[1].max_in_flight: must be at most 1000000",
        ),
        ("timeout_ms = 0", "link[1].timeout_ms: must be at least 1"),
        (
            "echo_interval_ms = 0",
            "link[1].echo_interval_ms: must be at least 1",
        ),
        (
            "echo_failures = 0",
            "link[1].echo_failures: must be at least 1",
        ),
        (
            "reconnect_min_ms = 0",
            "link[1].reconnect_min_ms: must be at least 1",
        ),
        (
            "reconnect_min_ms = 500\nreconnect_max_ms = 400",
            "link[1].reconnect_max_ms: must be at least 500",
        ),
        (
            "match_key = [\"mti_class\", \"1\"]",
            "link[1].match_key: \"1\" is neither mti_class nor a field number",
        ),
    ];
    for (setting, expected) in cases {
        let e = refusal(&link(setting));
        assert!(e.contains(expected), "{e:?} does not contain {expected:?}");
    }
}

#[test]
fn a_program_without_denominations_issues_the_seeds_six_face_values() {
    let c = load(
        "[[hosted.program]]\nid = \"P\"\nkind = \"prepaid\"\nbin_from = \"627\"\nbin_to = \"627\"\n",
    )
    .unwrap();
    assert_eq!(
        c.hosted.programs[0].denominations,
        [5_000, 10_000, 20_000, 30_000, 50_000, 100_000]
    );
}

#[test]
fn coupon_keys_are_versioned_and_the_fee_chain_leaves_the_merchant_something() {
    // No [coupons]: version 1, derived from the card key (not the card key itself).
    let c = load("").unwrap();
    assert_eq!(c.coupons.current, 1);
    assert_eq!(c.coupons.keys.len(), 1);
    assert_ne!(c.coupons.keys[0].1.expose(), c.card_key.expose());
    let c = load(&format!(
        "[coupons]\nkey_version = 3\nkey = {{ value = \"{CARD_KEY}\" }}\n\
         [[coupons.previous_keys]]\nversion = 2\nkey = {{ value = \"{CARD_KEY}\" }}\n"
    ))
    .unwrap();
    assert_eq!(c.coupons.current, 3);
    let versions: Vec<u8> = c.coupons.keys.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, [3, 2]);
    let e = refusal(&format!(
        "[coupons]\nkey_version = 2\n[[coupons.previous_keys]]\nversion = 2\nkey = {{ value = \"{CARD_KEY}\" }}\n"
    ));
    assert!(e.contains("coupons.previous_keys[0].version"), "{e}");
    let e = refusal("[coupons]\nkey = { value = \"abcd\" }\n");
    assert!(e.contains("coupons.key"), "{e}");
    let e = refusal("[books.coupon_fees_bp]\ncard_company = 6000\npg = 3000\noperator = 2000\n");
    assert!(e.contains("books.coupon_fees_bp"), "{e}");
}

#[test]
fn bank_listeners_and_partners_are_checked_with_their_key() {
    let bank = |extra: &str| {
        format!("[[listener]]\nname = \"b\"\naddr = \"127.0.0.1:0\"\nrole = \"bank\"\n{extra}\n")
    };
    assert!(refusal(&bank("")).contains("listener[0].bank: a bank listener names its bank code"));
    assert!(refusal(&bank("bank = \"0/4\"")).contains("listener[0].bank"));
    let c = load(&bank("bank = \"004\"")).unwrap();
    assert_eq!(c.listeners[0].role, ListenerRole::Bank);
    assert_eq!(c.listeners[0].bank.as_deref(), Some("004"));
    let terminal = "[[listener]]\nname = \"t\"\naddr = \"127.0.0.1:0\"\nbank = \"004\"\n";
    assert!(refusal(terminal).contains("only a listener with role = \"bank\""));

    let partner = |extra: &str| format!("[[partner]]\nid = \"MALL\"\n{extra}\n");
    assert!(
        refusal(&partner("callback_url = \"http://127.0.0.1:9/cb\""))
            .contains("partner[0].secret: a partner with a callback_url needs a secret")
    );
    assert!(refusal(&partner(
        "callback_url = \"https://h:9/cb\"\nsecret = { value = \"0123456789abcdef\" }"
    ))
    .contains("partner[0].callback_url"));
    assert!(refusal(&partner(
        "callback_url = \"http://h:9/cb\"\nsecret = { value = \"short\" }"
    ))
    .contains("partner[0].secret: callback secrets must be at least 16 characters"));
    let c = load(&partner(
        "callback_url = \"http://h:9/cb\"\nsecret = { value = \"0123456789abcdef\" }",
    ))
    .unwrap();
    let p = c.partner("MALL").unwrap();
    assert_eq!(p.secret.as_ref().unwrap().expose(), "0123456789abcdef");
    assert!(
        !format!("{c:?}").contains("0123456789abcdef"),
        "the secret never prints"
    );
    assert!(refusal("[outbox]\nretry_min_ms = 0\n").contains("outbox.retry_min_ms"));
}

#[test]
fn benchmark_durability_is_refused_unless_the_operator_says_unsafe() {
    // Absent: the product's synced journal, nothing to refuse.
    let c = load("").unwrap();
    assert_eq!(c.durability, Durability::Synced);
    assert!(c.refuse_unsafe(false).is_ok());
    for (text, mode) in [("off", Durability::Off), ("unsynced", Durability::Unsynced)] {
        let c = load(&format!("[bench]\ndurability = \"{text}\"\n")).unwrap();
        assert_eq!(c.durability, mode);
        let err = c.refuse_unsafe(false).unwrap_err();
        assert!(
            err.contains("--unsafe-no-durability") && err.contains(text),
            "{err}"
        );
        assert!(c.refuse_unsafe(true).is_ok());
    }
    let err = refusal("[bench]\ndurability = \"sometimes\"\n");
    assert!(err.contains("durability"), "{err}");
}
