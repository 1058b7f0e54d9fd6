//! The demo's secrets: card key, admin tokens, partner secret, terminal PIN key; random,
//! kept with its data (never in the source).

use std::path::Path;

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
