//! cyberswitch: an ISO 8583 switch that pays card transactions from the cyber-money wallets
//! linked to the card and sends any shortfall to the card acquirer as credit.

pub mod iso8583;
pub mod net;
