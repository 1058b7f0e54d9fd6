//! Networking: framing, TCP servers, upstream links, and a terminal client.

pub mod client;
pub mod framing;
pub mod link;
pub mod server;
