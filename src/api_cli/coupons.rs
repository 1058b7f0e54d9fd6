//! Mobile coupons (F18): issue one (optionally writing its token as a QR code) and show one.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::request::{seg, Call};

#[derive(Subcommand)]
pub enum CouponCommand {
    /// F18: issue a mobile coupon for a pre-registered customer and card; prints its token
    /// (barcode text) and approval number. `--png FILE` writes the token as a QR code.
    CouponIssue {
        #[arg(long)]
        card: String,
        #[arg(long)]
        registration: String,
        /// In currency minor units.
        #[arg(long)]
        discount: u64,
        /// Last day of validity, YYYY-MM-DD.
        #[arg(long)]
        expires: String,
        /// The only merchant (field 42) that may take it.
        #[arg(long)]
        merchant: Option<String>,
        /// Write the token as a QR code image (PNG) here.
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// F18: a coupon's terms (card masked) and whether it is used.
    CouponShow { id: String },
}

impl CouponCommand {
    /// Where to write the issued coupon's QR code, if asked.
    pub fn png(&self) -> Option<PathBuf> {
        match self {
            CouponCommand::CouponIssue { png, .. } => png.clone(),
            CouponCommand::CouponShow { .. } => None,
        }
    }

    pub fn call(self) -> Call {
        match self {
            CouponCommand::CouponIssue {
                card,
                registration,
                discount,
                expires,
                merchant,
                png: _,
            } => Call::post(
                "/v1/coupons",
                Some(json!({
                    "card_number": card,
                    "registration": registration,
                    "discount": discount,
                    "expires": expires,
                    "merchant": merchant,
                })),
            ),
            CouponCommand::CouponShow { id } => Call::get(format!("/v1/coupons/{}", seg(&id))),
        }
    }
}

/// After an issue asked with `--png`: the answer's token written as a QR code image.
pub fn write_png(png: Option<PathBuf>, answer: &Value) -> Result<(), String> {
    if let (Some(path), Some(token)) = (png, answer["token"].as_str()) {
        cyberswitch::coupons::write_qr_png(token, &path)?;
        eprintln!("QR code written to {}", path.display());
    }
    Ok(())
}
