//! Networking: framing, TCP servers, upstream links, a terminal client, TLS (`tls.rs`), the
//! demo's certificate authority (`pki.rs`) and the capped listener of the HTTP endpoints
//! (`http_listener.rs`).

pub mod client;
mod connection;
pub mod framing;
pub mod http_listener;
pub mod link;
pub mod pki;
mod request_set;
pub mod server;
pub mod tls;
