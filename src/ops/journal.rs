//! `cyberswitch journal …`: the journal read back for people (masked).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use cyberswitch::config::Config;

#[derive(Subcommand)]
pub enum JournalCommand {
    /// Print entries from a sequence number on.
    Show {
        #[command(flatten)]
        source: JournalSource,
        /// First sequence number.
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print the last entries; with --follow, keep printing new ones.
    Tail {
        #[command(flatten)]
        source: JournalSource,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(long)]
        follow: bool,
    },
    /// Print every entry of the transactions with this retrieval reference number.
    Find {
        #[command(flatten)]
        source: JournalSource,
        #[arg(long)]
        rrn: String,
    },
}

/// Where the journal is: a data directory, or the configuration naming it. Opened read-only,
/// so it works next to a running switch.
#[derive(Args)]
pub struct JournalSource {
    #[arg(long, conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "config/cyberswitch.toml")]
    config: PathBuf,
}

impl JournalSource {
    fn open(&self) -> Result<cyberswitch::store::Store, String> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => {
                Config::load(&self.config)
                    .map_err(|e| e.to_string())?
                    .data_dir
            }
        };
        cyberswitch::store::open_read_only(&dir)
    }
}

pub fn journal(cmd: JournalCommand) -> Result<(), String> {
    use cyberswitch::journal::read;
    let print = |entries: &[read::Numbered]| {
        for (seq, i, e) in entries {
            println!("{}", e.line(&format!("{seq}.{i}")));
        }
    };
    match cmd {
        JournalCommand::Show {
            source,
            from,
            limit,
        } => print(&read::from(&source.open()?, from, limit)?),
        JournalCommand::Find { source, rrn } => {
            let found = read::find_rrn(&source.open()?, rrn.trim())?;
            if found.is_empty() {
                return Err(format!("no journal entry with RRN {rrn}"));
            }
            print(&found);
        }
        JournalCommand::Tail {
            source,
            lines,
            follow,
        } => {
            let last = read::tail(&source.open()?, lines)?;
            print(&last);
            let mut next = last.last().map_or(0, |(s, _, _)| s + 1);
            if !follow {
                return Ok(());
            }
            loop {
                std::thread::sleep(Duration::from_millis(500));
                // A read-only handle sees the journal as it was when opened: open again.
                let new = read::from(&source.open()?, next, 10_000)?;
                print(&new);
                next = new.last().map_or(next, |(s, _, _)| s + 1);
            }
        }
    }
    Ok(())
}
