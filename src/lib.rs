//! cyberswitch: an ISO 8583 switch that pays card transactions from the cyber-money wallets
//! linked to the card and sends any shortfall to the card acquirer as credit.

#[cfg(feature = "storage")]
pub mod admin;
pub mod admin_bodies;
#[cfg(feature = "storage")]
pub mod books;
pub mod clock;
pub mod config;
#[cfg(feature = "storage")]
pub mod daemon;
#[cfg(feature = "storage")]
pub mod demo;
#[cfg(feature = "storage")]
pub mod directory;
pub mod fds;
#[cfg(feature = "storage")]
pub mod hosted;
pub mod iso8583;
#[cfg(feature = "storage")]
pub mod journal;
pub mod keylock;
#[cfg(feature = "storage")]
pub mod ledger;
#[cfg(feature = "storage")]
pub mod load;
pub mod net;
pub mod observe;
pub mod pin;
pub mod records;
#[cfg(feature = "storage")]
pub mod sim;
#[cfg(feature = "storage")]
pub mod store;
#[cfg(feature = "storage")]
pub mod switch;
