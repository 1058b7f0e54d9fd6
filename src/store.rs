//! The switch's RocksDB database: one DB per data directory, one column family per concept.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

/// Column families the switch uses.
pub const CF_CARD_LINKS: &str = "card_links";
const FAMILIES: &[&str] = &[CF_CARD_LINKS];

/// Open (creating if needed) the database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = FAMILIES
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    DB::open_cf_descriptors(&opts, dir, cfs)
        .map(Arc::new)
        .map_err(|e| format!("{}: cannot open database: {e}", dir.display()))
}
