//! Operating commands: `run`, `demo`, `sim`, `link`, `keys rotate`, `send`, `journal`,
//! `load`; one file a command (or two close ones).

mod journal;
mod load;
mod offline;
mod run;
mod send;
mod sim;

pub use journal::{journal, JournalCommand};
pub use load::{load, LoadArgs};
pub use offline::{keys, link, KeysCommand, LinkCommand};
pub use run::{demo, run, DemoArgs, RunArgs};
pub use send::{send, SendArgs};
pub use sim::{sim, SimCommand};

pub fn block_on(f: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?
        .block_on(f)
}
