//! Networking: framing, TCP servers, upstream links, a terminal client, TLS (`tls.rs`) and the
//! demo's certificate authority (`pki.rs`).

pub mod client;
pub mod framing;
pub mod link;
pub mod pki;
pub mod server;
pub mod tls;
