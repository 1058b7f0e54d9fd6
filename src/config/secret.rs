//! Secrets: how the file says where one is ([`Secret`]), and the values read from there at
//! load ([`SecretBytes`], [`SecretText`]), which never print themselves.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// A secret given inline, by environment variable, or in a file (hex or text): the three ways
/// keys and tokens reach the switch, never from the source.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub value: Option<String>,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// Where the secret comes from, never the inline value itself.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("value", &self.value.as_ref().map(|_| ".."))
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

impl Secret {
    /// The secret's text: the environment variable if named and set, else the file, else the
    /// inline value.
    pub fn read(&self) -> Result<String, String> {
        self.read_with_origin().map(|(text, _)| text)
    }

    /// The secret's text and where it came from (`$VAR` or the file; `None`: inline).
    pub fn read_with_origin(&self) -> Result<(String, Option<String>), String> {
        if let Some(var) = &self.env {
            if let Ok(v) = std::env::var(var) {
                return Ok((v.trim().to_string(), Some(format!("${var}"))));
            }
            if self.file.is_none() && self.value.is_none() {
                return Err(format!("environment variable {var} is not set"));
            }
        }
        if let Some(path) = &self.file {
            return std::fs::read_to_string(path)
                .map(|t| (t.trim().to_string(), Some(path.display().to_string())))
                .map_err(|e| format!("{}: cannot read: {e}", path.display()));
        }
        self.value
            .clone()
            .map(|v| (v.trim().to_string(), None))
            .ok_or_else(|| "no value, env or file given".into())
    }

    /// The secret as a PIN key (32 hex digits).
    pub fn pin_key(&self) -> Result<crate::pin::PinKey, String> {
        crate::pin::PinKey::from_hex(&self.read()?).map_err(|e| e.to_string())
    }
}

/// Key material read at load (the card key).
#[derive(Clone)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    /// The bytes themselves, for the one that keys its hash or cipher with them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// A secret text read at load (an admin token).
#[derive(Clone)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(text: String) -> SecretText {
        SecretText(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(..)")
    }
}
