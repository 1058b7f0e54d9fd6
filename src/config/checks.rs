//! What the file says, checked before anything is resolved: names unique, references to links
//! and issuers that exist, BIN ranges well formed, and every number in its range — a value
//! that would panic or spin at the first connection is refused here, with the key.

use std::collections::HashSet;
use std::fmt::Display;
use std::path::Path;

use super::schema::{
    AdminToml, ConfigToml, IssuerConfig, LinkKind, LinkToml, ListenerToml, RoleKind, WalletKind,
};
use super::{ConfigError, HOSTED_CARDS_LINK};

/// Connections, sessions and requests in flight: far above what one process serves, and far
/// below what the semaphores and channels counting them accept (beyond that they panic).
pub(super) const MAX_COUNT: usize = 1_000_000;
/// The admin API's idle timeout: a day (its deadline is an instant, which must not overflow).
const MAX_ADMIN_IDLE_S: u64 = 86_400;
/// Months of validity of a hosted card: the expiry date (YYMM) has a two-digit year.
const MAX_VALIDITY_MONTHS: u32 = 600;

/// Errors name the file they are about.
pub(super) struct Origin<'a>(pub &'a Path);

impl Origin<'_> {
    pub fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.0.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// `value` within `min..=max`, or an error naming `key`.
    fn within<T: PartialOrd + Display>(
        &self,
        key: impl Into<String>,
        value: T,
        min: T,
        max: T,
    ) -> Result<(), ConfigError> {
        if value < min {
            Err(self.err(key, format!("must be at least {min}")))
        } else if value > max {
            Err(self.err(key, format!("must be at most {max}")))
        } else {
            Ok(())
        }
    }

    fn positive(&self, key: impl Into<String>, value: u64) -> Result<(), ConfigError> {
        self.within(key, value, 1, u64::MAX)
    }

    fn count(&self, key: impl Into<String>, value: usize) -> Result<(), ConfigError> {
        self.within(key, value, 1, MAX_COUNT)
    }
}

pub(super) fn check(file: &ConfigToml, origin: &Path) -> Result<(), ConfigError> {
    let at = Origin(origin);
    let mut names = HashSet::new();
    for (i, l) in file.listeners.iter().enumerate() {
        if !names.insert(l.name.as_str()) {
            let key = format!("listener[{i}].name");
            return Err(at.err(key, format!("duplicate name {:?}", l.name)));
        }
        listener(&at, &format!("listener[{i}]"), l)?;
    }
    let mut link_names = HashSet::new();
    for (i, l) in file.links.iter().enumerate() {
        if !link_names.insert(l.name.as_str()) {
            let key = format!("link[{i}].name");
            return Err(at.err(key, format!("duplicate link name {:?}", l.name)));
        }
        link(&at, &format!("link[{i}]"), l)?;
    }
    issuers(&at, file)?;
    routing(&at, file)?;
    at.within("currency", file.currency, 1, 999)?;
    at.within("books.drain_s", file.books.drain_s, 0, 3_600)?;
    for (name, bp) in &file.books.fees_bp {
        at.within(format!("books.fees_bp.{name}"), *bp, 0, 10_000)?;
    }
    // The coupon fee chain leaves the merchant something (never a negative payout).
    let chain = file.books.coupon_fees_bp;
    let total = u64::from(chain.card_company) + u64::from(chain.pg) + u64::from(chain.operator);
    at.within("books.coupon_fees_bp", total, 0, 10_000)?;
    at.within("coupons.key_version", file.coupons.key_version, 1, 255)?;
    let mut versions = HashSet::from([file.coupons.key_version]);
    for (i, k) in file.coupons.previous_keys.iter().enumerate() {
        at.within(
            format!("coupons.previous_keys[{i}].version"),
            k.version,
            1,
            255,
        )?;
        if !versions.insert(k.version) {
            let key = format!("coupons.previous_keys[{i}].version");
            return Err(at.err(key, format!("key version {} given twice", k.version)));
        }
    }
    let codes = &file.processing_codes;
    for (name, list) in [
        ("inquiry", &codes.inquiry),
        ("purchase", &codes.purchase),
        ("refund", &codes.refund),
        ("load", &codes.load),
    ] {
        for &code in list {
            at.within(format!("processing_codes.{name}"), code, 0, 99)?;
        }
    }
    hosted(&at, file)?;
    if let Some(admin) = &file.admin {
        self::admin(&at, file, admin)?;
    }
    limits(&at, file)?;
    partners(&at, file)?;
    if file.card_key.is_none()
        && file.card_key_env.is_none()
        && file.card_key_file.is_none()
        && file.keys.as_ref().is_none_or(|k| k.card.is_empty())
    {
        return Err(at.err(
            "card_key",
            "set card_key_env (or card_key) to the HMAC key for card look-ups",
        ));
    }
    Ok(())
}

/// A partner, bank or region code, a pool account or an order id: 1 to 16 (codes) letters,
/// digits, `-` or `_` — safe in keys (no `/`), paths and logs.
pub fn valid_code(s: &str) -> bool {
    valid_id(s, 16)
}

/// As [`valid_code`], up to `max` characters (accounts: 28, the size of field 103; orders: 64).
pub fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// F17 and the callback outbox: partner ids unique and well formed, callback URLs plain
/// `http://host:port/path` (the only scheme the outbox speaks), retry figures in range.
fn partners(at: &Origin, file: &ConfigToml) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    for (i, p) in file.partners.iter().enumerate() {
        let key = format!("partner[{i}]");
        if !valid_code(&p.id) {
            return Err(at.err(format!("{key}.id"), "1 to 16 letters, digits, '-' or '_'"));
        }
        if !ids.insert(p.id.as_str()) {
            return Err(at.err(format!("{key}.id"), format!("duplicate partner {:?}", p.id)));
        }
        if let Some(url) = &p.callback_url {
            crate::callback::HttpTarget::parse(url)
                .map_err(|reason| at.err(format!("{key}.callback_url"), reason))?;
            if p.secret.is_none() {
                return Err(at.err(
                    format!("{key}.secret"),
                    "a partner with a callback_url needs a secret to sign its callbacks",
                ));
            }
        }
    }
    let o = &file.outbox;
    at.positive("outbox.retry_min_ms", o.retry_min_ms)?;
    at.within(
        "outbox.retry_max_ms",
        o.retry_max_ms,
        o.retry_min_ms,
        86_400_000,
    )?;
    at.positive("outbox.timeout_ms", o.timeout_ms)?;
    at.within("outbox.concurrency", o.concurrency, 1, 256)?;
    at.positive("outbox.statements_check_s", o.statements_check_s)?;
    // At least a week: the statements look back three days and skip a day whose item is
    // still kept (one removed sooner would be sent again).
    if o.keep_delivered_days != 0 {
        at.within(
            "outbox.keep_delivered_days",
            o.keep_delivered_days,
            7,
            36_500,
        )?;
    }
    let v = &file.virtual_accounts;
    at.within(
        "virtual_accounts.default_expiry_min",
        v.default_expiry_min,
        1,
        525_600,
    )?;
    at.positive("virtual_accounts.sweep_s", v.sweep_s)
}

fn listener(at: &Origin, key: &str, l: &ListenerToml) -> Result<(), ConfigError> {
    match (l.role, &l.bank) {
        (super::ListenerRole::Bank, None) => {
            return Err(at.err(
                format!("{key}.bank"),
                "a bank listener names its bank code (the --bank of its pools)",
            ))
        }
        (super::ListenerRole::Bank, Some(b)) if !valid_code(b) => {
            return Err(at.err(format!("{key}.bank"), "1 to 16 letters, digits, '-' or '_'"))
        }
        (super::ListenerRole::Terminal, Some(_)) => {
            return Err(at.err(
                format!("{key}.bank"),
                "only a listener with role = \"bank\" has a bank code",
            ))
        }
        _ => {}
    }
    at.count(format!("{key}.max_connections"), l.max_connections)?;
    at.count(
        format!("{key}.max_connections_per_peer"),
        l.max_connections_per_peer,
    )?;
    at.count(format!("{key}.max_in_flight"), l.max_in_flight)?;
    at.positive(format!("{key}.idle_timeout_ms"), l.idle_timeout_ms)
}

fn link(at: &Origin, key: &str, l: &LinkToml) -> Result<(), ConfigError> {
    if l.hosts.is_empty() {
        return Err(at.err(format!("{key}.hosts"), "at least one host is needed"));
    }
    at.count(format!("{key}.sessions"), l.sessions)?;
    at.count(format!("{key}.max_in_flight"), l.max_in_flight)?;
    at.within(
        format!("{key}.legs_ahead"),
        l.legs_ahead,
        0,
        super::schema::MAX_LEGS_AHEAD,
    )?;
    at.positive(format!("{key}.timeout_ms"), l.timeout_ms)?;
    // Zero would echo in a tight loop, or drop the session at its first unanswered echo
    // whatever the setting, or reconnect without pause.
    at.positive(format!("{key}.echo_interval_ms"), l.echo_interval_ms)?;
    at.within(format!("{key}.echo_failures"), l.echo_failures, 1, u32::MAX)?;
    at.positive(format!("{key}.reconnect_min_ms"), l.reconnect_min_ms)?;
    at.within(
        format!("{key}.reconnect_max_ms"),
        l.reconnect_max_ms,
        l.reconnect_min_ms,
        u64::MAX,
    )
}

fn link_kind(file: &ConfigToml, name: &str) -> Option<LinkKind> {
    file.links.iter().find(|l| l.name == name).map(|l| l.kind)
}

fn issuer<'f>(file: &'f ConfigToml, id: &str) -> Option<&'f IssuerConfig> {
    file.issuers.iter().find(|i| i.id == id)
}

fn issuers(at: &Origin, file: &ConfigToml) -> Result<(), ConfigError> {
    let mut issuer_ids = HashSet::new();
    for (i, iss) in file.issuers.iter().enumerate() {
        let key = |k: &str| format!("issuer[{i}].{k}");
        if !issuer_ids.insert(iss.id.as_str()) {
            return Err(at.err(key("id"), format!("duplicate issuer id {:?}", iss.id)));
        }
        at.positive(key("units_per_currency_unit"), iss.units_per_currency_unit)?;
        if let Some(p) = iss.refund_priority {
            at.within(key("refund_priority"), p, 0, 9)?;
        }
        match (&iss.link, iss.hosted) {
            (Some(_), true) => {
                return Err(at.err(
                    key("link"),
                    "a hosted issuer has no link (it is served in-process)",
                ))
            }
            (None, true) if link_kind(file, &iss.id).is_some() => {
                return Err(at.err(
                    key("id"),
                    format!(
                        "a hosted issuer's id {:?} names its link; a link has it already",
                        iss.id
                    ),
                ))
            }
            (None, true) => {}
            (None, false) => return Err(at.err(key("link"), "set link, or hosted = true")),
            (Some(link), false) => match link_kind(file, link) {
                Some(LinkKind::Issuer) => {}
                Some(LinkKind::Acquirer) => {
                    return Err(at.err(key("link"), format!("{link:?} is an acquirer link")))
                }
                None => return Err(at.err(key("link"), format!("no link named {link:?}"))),
            },
        }
    }
    Ok(())
}

fn routing(at: &Origin, file: &ConfigToml) -> Result<(), ConfigError> {
    let acquirer = |name: &str, key: String| match link_kind(file, name) {
        Some(LinkKind::Acquirer) => Ok(()),
        _ => Err(at.err(key, format!("no acquirer link named {name:?}"))),
    };
    if let Some(a) = &file.routing.default_acquirer {
        acquirer(a, "routing.default_acquirer".into())?;
    }
    for (i, b) in file.routing.bins.iter().enumerate() {
        acquirer(&b.acquirer, format!("routing.bin[{i}].acquirer"))?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(&b.from) || !digits(&b.to) || b.from.len() != b.to.len() || b.from > b.to {
            return Err(at.err(
                format!("routing.bin[{i}]"),
                "from and to must be digit strings of equal length with from <= to",
            ));
        }
    }
    Ok(())
}

fn hosted(at: &Origin, file: &ConfigToml) -> Result<(), ConfigError> {
    if file.links.iter().any(|l| l.name == HOSTED_CARDS_LINK) {
        return Err(at.err(
            "link",
            format!("the link name {HOSTED_CARDS_LINK:?} is reserved for the hosted programs"),
        ));
    }
    // Zero would release every hold at once, and refuse every card's first PIN.
    at.positive("hosted.hold_ttl_s", file.hosted.hold_ttl_s)?;
    at.within("hosted.pin_tries", file.hosted.pin_tries, 1, u32::MAX)?;
    let programs = &file.hosted.programs;
    let mut ids = HashSet::new();
    for (i, p) in programs.iter().enumerate() {
        let key = |k: &str| format!("hosted.program[{i}].{k}");
        if !ids.insert(p.id.as_str()) {
            return Err(at.err(key("id"), format!("duplicate program id {:?}", p.id)));
        }
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 11 && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(&p.bin_from) || p.bin_from.len() != p.bin_to.len() || p.bin_from > p.bin_to {
            return Err(at.err(
                key("bin_from"),
                "bin_from and bin_to must be digit strings of equal length with from <= to",
            ));
        }
        if let Some(other) = programs[..i]
            .iter()
            .find(|o| o.owns(&p.bin_from) || p.owns(&o.bin_from))
        {
            return Err(at.err(
                key("bin_from"),
                format!("BIN range overlaps program {:?}", other.id),
            ));
        }
        if p.recharge_step == 0
            || p.max_balance == 0
            || p.denominations.iter().any(|&d| d == 0 || d > p.max_balance)
        {
            return Err(at.err(
                key("denominations"),
                "recharge_step and max_balance must be at least 1, denominations between 1 and max_balance",
            ));
        }
        at.within(
            key("validity_months"),
            p.validity_months,
            1,
            MAX_VALIDITY_MONTHS,
        )?;
        if let Some(pi) = &p.points_issuer {
            match issuer(file, pi) {
                Some(iss) if iss.hosted && iss.kind == WalletKind::Points => {}
                _ => {
                    return Err(at.err(
                        key("points_issuer"),
                        format!("{pi:?} is not a hosted issuer of kind points"),
                    ))
                }
            }
        } else if p.points_per_1000 > 0 {
            return Err(at.err(
                key("points_issuer"),
                "points_per_1000 needs a points_issuer",
            ));
        }
    }
    Ok(())
}

fn admin(at: &Origin, file: &ConfigToml, admin: &AdminToml) -> Result<(), ConfigError> {
    at.count("admin.max_connections", admin.max_connections)?;
    at.within(
        "admin.idle_timeout_s",
        admin.idle_timeout_s,
        1,
        MAX_ADMIN_IDLE_S,
    )?;
    at.within(
        "admin.request_timeout_s",
        admin.request_timeout_s,
        1,
        MAX_ADMIN_IDLE_S,
    )?;
    at.within(
        "admin.rate_per_token_s",
        admin.rate_per_token_s,
        1,
        u32::MAX,
    )?;
    for (i, t) in admin.tokens.iter().enumerate() {
        let key = format!("admin.token[{i}]");
        if let Some(rate) = t.rate_per_s {
            at.within(format!("{key}.rate_per_s"), rate, 1, u32::MAX)?;
        }
        let scoped = t.scope.as_ref().is_some_and(|s| !s.is_empty());
        if (t.role == RoleKind::Operator) == scoped {
            return Err(at.err(
                format!("{key}.scope"),
                "issuer and partner tokens name their scope; operator tokens have none",
            ));
        }
        if t.role == RoleKind::Issuer {
            let id = t.scope.as_deref().unwrap_or("");
            if issuer(file, id).is_none() {
                return Err(at.err(format!("{key}.scope"), format!("no issuer {id:?}")));
            }
        }
    }
    Ok(())
}

fn limits(at: &Origin, file: &ConfigToml) -> Result<(), ConfigError> {
    let l = &file.limits;
    if l.saf_retry_min_ms == 0 || l.saf_retry_max_ms < l.saf_retry_min_ms {
        return Err(at.err(
            "limits.saf_retry_max_ms",
            "retry delays must be at least 1 ms, the ceiling not below the first",
        ));
    }
    if l.saf_expiry_s == 0 || l.journal_batch_max == 0 || l.duplicate_window_s == 0 {
        return Err(at.err(
            "limits",
            "saf_expiry_s, journal_batch_max and duplicate_window_s must be at least 1",
        ));
    }
    if l.journal_sync_delay_us > 10_000 {
        return Err(at.err(
            "limits.journal_sync_delay_us",
            "at most 10000 (10 ms): a longer wait only holds every synced step",
        ));
    }
    if l.journal_retention_days > 0 {
        let kept_s = l.journal_retention_days.saturating_mul(86_400);
        if l.journal_retention_days > 36_500
            || kept_s < l.duplicate_window_s
            || kept_s < l.saf_expiry_s
        {
            return Err(at.err(
                "limits.journal_retention_days",
                "0 (keep for ever) or 1 to 36500 days, and not shorter than duplicate_window_s or saf_expiry_s",
            ));
        }
    }
    at.within("limits.shutdown_drain_s", l.shutdown_drain_s, 0, 3_600)?;
    at.within("limits.delivery_doubt_s", l.delivery_doubt_s, 1, 86_400)?;
    at.within("limits.max_legs", l.max_legs, 1, 64)?;
    at.within("limits.max_links_per_card", l.max_links_per_card, 1, 256)?;
    if l.journal_archive_dir.is_some() && l.journal_retention_days == 0 {
        return Err(at.err(
            "limits.journal_archive_dir",
            "archives what the retention deletes: set limits.journal_retention_days too",
        ));
    }
    Ok(())
}
