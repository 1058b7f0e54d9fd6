//! From the file as written to the configuration the switch runs with: specs loaded (each
//! once, however many listeners and links name it), framings and match keys parsed, PIN keys,
//! admin tokens and the card key read. Errors name the key, as the checks' do.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use super::checks::Origin;
use super::schema::{self, AdminToml, ConfigToml, LinkToml, ListenerToml, PartnerToml};
use super::{
    AdminConfig, Config, ConfigError, LinkConfig, ListenerConfig, MatchField, PartnerConfig,
    Profile, Secret, SecretBytes, SecretText, TokenConfig,
};
use crate::iso8583::Spec;
use crate::net::framing::DEFAULT_MAX_FRAME;
use crate::pin::PinKey;

/// Resolve a checked file.
pub(super) fn resolve(file: ConfigToml, origin: &Path) -> Result<Config, ConfigError> {
    let mut r = Resolver {
        at: Origin(origin),
        specs: HashMap::new(),
    };
    let mut listeners = Vec::with_capacity(file.listeners.len());
    for (i, l) in file.listeners.into_iter().enumerate() {
        listeners.push(r.listener(&format!("listener[{i}]"), l)?);
    }
    let mut links = Vec::with_capacity(file.links.len());
    for (i, l) in file.links.into_iter().enumerate() {
        links.push(r.link(&format!("link[{i}]"), l)?);
    }
    let local_profile = r
        .profile(
            &schema::default_spec(),
            &schema::default_framing(),
            DEFAULT_MAX_FRAME,
        )
        .map_err(|(k, reason)| r.at.err("", format!("in-process links: {k}: {reason}")))?;
    let admin = match file.admin {
        Some(a) => Some(r.admin(a)?),
        None => None,
    };
    let mut partners = Vec::with_capacity(file.partners.len());
    for (i, p) in file.partners.into_iter().enumerate() {
        partners.push(r.partner(&format!("partner[{i}]"), p)?);
    }
    let books = super::BooksConfig::resolve(&file.books)
        .map_err(|(k, reason)| r.at.err(format!("books.{k}"), reason))?;
    let legacy = Secret {
        value: file.card_key,
        env: file.card_key_env,
        file: file.card_key_file,
    };
    let card_keys =
        card_keys(&legacy, file.keys.as_ref()).map_err(|(k, reason)| r.at.err(k, reason))?;
    let card_key = card_keys
        .last()
        .map(|(_, k)| k.clone())
        .ok_or_else(|| r.at.err("card_key", "no card key"))?;
    // The default coupon key is derived from the oldest card key: rotating card keys must not
    // orphan coupons already issued (coupons rotate through `[coupons]` versions).
    let oldest = card_keys
        .first()
        .map(|(_, k)| k.clone())
        .ok_or_else(|| r.at.err("card_key", "no card key"))?;
    let coupons = coupon_keys(&file.coupons, &oldest).map_err(|(k, reason)| r.at.err(k, reason))?;
    Ok(Config {
        data_dir: file.data_dir,
        metrics_addr: file.metrics_addr,
        card_key,
        card_keys,
        currency: file.currency,
        institution_id: file.institution_id,
        listeners,
        links,
        local_profile,
        issuers: file.issuers,
        routing: file.routing,
        processing_codes: file.processing_codes,
        limits: file.limits,
        refunds: file.refunds,
        books,
        hosted: file.hosted,
        coupons,
        admin,
        partners,
        virtual_accounts: file.virtual_accounts,
        outbox: file.outbox,
        durability: file.bench.durability,
    })
}

struct Resolver<'a> {
    at: Origin<'a>,
    /// Specs loaded so far, by the name (or path) they were given as.
    specs: HashMap<String, Arc<Spec>>,
}

impl Resolver<'_> {
    /// A partner's signing secret read (at least 16 characters).
    fn partner(&mut self, key: &str, p: PartnerToml) -> Result<PartnerConfig, ConfigError> {
        let secret = match &p.secret {
            Some(s) => {
                let text = s
                    .read()
                    .map_err(|reason| self.at.err(format!("{key}.secret"), reason))?;
                if text.len() < 16 {
                    return Err(self.at.err(
                        format!("{key}.secret"),
                        "callback secrets must be at least 16 characters",
                    ));
                }
                Some(SecretText::new(text))
            }
            None => None,
        };
        Ok(PartnerConfig {
            id: p.id,
            callback_url: p.callback_url,
            secret,
            daily_statements: p.daily_statements,
        })
    }

    fn profile(
        &mut self,
        spec: &str,
        framing: &str,
        max_frame: usize,
    ) -> Result<Profile, (&'static str, String)> {
        let loaded = match self.specs.get(spec) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Spec::resolve(spec).map_err(|e| ("spec", e.to_string()))?);
                self.specs.insert(spec.to_string(), s.clone());
                s
            }
        };
        Profile::with_spec(loaded, framing, max_frame)
    }

    fn listener(&mut self, key: &str, l: ListenerToml) -> Result<ListenerConfig, ConfigError> {
        let profile = self
            .profile(&l.spec, &l.framing, l.max_frame)
            .map_err(|(k, reason)| self.at.err(format!("{key}.{k}"), reason))?;
        Ok(ListenerConfig {
            pin_key: self.pin_key(key, l.pin_key.as_ref())?,
            name: l.name,
            addr: l.addr,
            profile,
            max_connections: l.max_connections,
            max_connections_per_peer: l.max_connections_per_peer,
            max_in_flight: l.max_in_flight,
            idle_timeout_ms: l.idle_timeout_ms,
            tls: l
                .tls
                .map(crate::net::tls::ServerTls::load)
                .transpose()
                .map_err(|reason| self.at.err(format!("{key}.tls"), reason))?,
            role: l.role,
            bank: l.bank,
        })
    }

    fn link(&mut self, key: &str, l: LinkToml) -> Result<LinkConfig, ConfigError> {
        let profile = self
            .profile(&l.spec, &l.framing, l.max_frame)
            .map_err(|(k, reason)| self.at.err(format!("{key}.{k}"), reason))?;
        let mut match_key = Vec::with_capacity(l.match_key.len());
        for f in &l.match_key {
            match_key.push(MatchField::parse(f).ok_or_else(|| {
                self.at.err(
                    format!("{key}.match_key"),
                    format!("{f:?} is neither mti_class nor a field number"),
                )
            })?);
        }
        Ok(LinkConfig {
            pin_key: self.pin_key(key, l.pin_key.as_ref())?,
            name: l.name,
            kind: l.kind,
            hosts: l.hosts,
            sessions: l.sessions,
            profile,
            timeout_ms: l.timeout_ms,
            echo_interval_ms: l.echo_interval_ms,
            echo_failures: l.echo_failures,
            sign_on: l.sign_on,
            match_key,
            max_in_flight: l.max_in_flight,
            reconnect_min_ms: l.reconnect_min_ms,
            reconnect_max_ms: l.reconnect_max_ms,
            legs_ahead: l.legs_ahead,
            tls: l
                .tls
                .map(crate::net::tls::ClientTls::load)
                .transpose()
                .map_err(|reason| self.at.err(format!("{key}.tls"), reason))?,
        })
    }

    /// A listener's or link's PIN key, read now rather than at the first transaction.
    fn pin_key(&self, key: &str, secret: Option<&Secret>) -> Result<Option<PinKey>, ConfigError> {
        secret
            .map(|s| {
                s.pin_key()
                    .map_err(|reason| self.at.err(format!("{key}.pin_key"), reason))
            })
            .transpose()
    }

    fn admin(&self, a: AdminToml) -> Result<AdminConfig, ConfigError> {
        let mut tokens = Vec::with_capacity(a.tokens.len());
        for (i, t) in a.tokens.into_iter().enumerate() {
            let key = format!("admin.token[{i}]");
            let text = t
                .token
                .read()
                .map_err(|reason| self.at.err(format!("{key}.token"), reason))?;
            if text.len() < 16 {
                return Err(self.at.err(
                    format!("{key}.token"),
                    "tokens must be at least 16 characters",
                ));
            }
            let rate = t.rate_per_s.unwrap_or(a.rate_per_token_s);
            let rate_per_s = NonZeroU32::new(rate).ok_or_else(|| {
                self.at
                    .err(format!("{key}.rate_per_s"), "must be at least 1")
            })?;
            tokens.push(TokenConfig {
                name: t.name,
                role: t.role,
                scope: t.scope,
                token: SecretText::new(text),
                rate_per_s,
            });
        }
        Ok(AdminConfig {
            addr: a.addr,
            max_connections: a.max_connections,
            idle_timeout_s: a.idle_timeout_s,
            request_timeout_s: a.request_timeout_s,
            tokens,
            tls: a
                .tls
                .map(crate::net::tls::ServerTls::load)
                .transpose()
                .map_err(|reason| self.at.err("admin.tls", reason))?,
        })
    }
}

/// The coupon keys (F18): the configured ones, or the current version derived from the card
/// key under a fixed label (never the card key itself: look-ups and coupons share no key).
fn coupon_keys(
    t: &super::CouponsToml,
    card_key: &SecretBytes,
) -> Result<super::CouponsConfig, (String, String)> {
    use hmac::{Hmac, Mac};
    let current = match &t.key {
        Some(secret) => card_key_bytes(secret).map_err(|e| ("coupons.key".to_string(), e))?,
        None => {
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(card_key.expose())
                .map_err(|e| ("card_key".to_string(), e.to_string()))?;
            mac.update(b"cyberswitch/coupon-key");
            mac.update(&[t.key_version]);
            SecretBytes::new(mac.finalize().into_bytes().to_vec())
        }
    };
    let mut keys = vec![(t.key_version, current)];
    for (i, k) in t.previous_keys.iter().enumerate() {
        let bytes =
            card_key_bytes(&k.key).map_err(|e| (format!("coupons.previous_keys[{i}].key"), e))?;
        keys.push((k.version, bytes));
    }
    Ok(super::CouponsConfig {
        current: t.key_version,
        keys,
    })
}

/// The card key's versions up to the current one, ascending: `card_key*` is version 1,
/// `[[keys.card]]` the others. Without `[keys]`, version 1 alone.
fn card_keys(
    legacy: &Secret,
    keys: Option<&schema::KeysToml>,
) -> Result<Vec<(u32, SecretBytes)>, (String, String)> {
    let has_legacy = legacy.value.is_some() || legacy.env.is_some() || legacy.file.is_some();
    let Some(keys) = keys else {
        let key = card_key_bytes(legacy).map_err(|e| ("card_key".to_string(), e))?;
        return Ok(vec![(1, key)]);
    };
    let mut all = std::collections::BTreeMap::new();
    if has_legacy {
        let key = card_key_bytes(legacy).map_err(|e| ("card_key".to_string(), e))?;
        all.insert(1u32, key);
    }
    for (i, k) in keys.card.iter().enumerate() {
        let at = format!("keys.card[{i}]");
        if k.version == 0 {
            return Err((format!("{at}.version"), "versions start at 1".into()));
        }
        if all.contains_key(&k.version) {
            return Err((
                format!("{at}.version"),
                format!(
                    "version {} is given twice (card_key is version 1)",
                    k.version
                ),
            ));
        }
        let secret = Secret {
            value: k.value.clone(),
            env: k.env.clone(),
            file: k.file.clone(),
        };
        let key = card_key_bytes(&secret).map_err(|e| (at.clone(), e))?;
        all.insert(k.version, key);
    }
    if !all.contains_key(&keys.current) {
        return Err((
            "keys.current".into(),
            format!("no card key has version {}", keys.current),
        ));
    }
    // Versions above the current one are staged, not used yet.
    Ok(all
        .into_iter()
        .filter(|(v, _)| *v <= keys.current)
        .collect())
}

/// The card look-up key, from the environment variable if named, else from the file, else
/// inline: hex, at least 32 bytes.
fn card_key_bytes(secret: &Secret) -> Result<SecretBytes, String> {
    let (text, origin) = secret.read_with_origin()?;
    let origin = origin.unwrap_or_else(|| "card_key".into());
    let key = hex::decode(text.trim()).map_err(|e| format!("{origin}: not hex: {e}"))?;
    if key.len() < 32 {
        return Err(format!(
            "{origin}: the key must be at least 32 bytes, got {}",
            key.len()
        ));
    }
    Ok(SecretBytes::new(key))
}
