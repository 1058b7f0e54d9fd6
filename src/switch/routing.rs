//! Where a card goes, decided once per request from tables built at start: a hosted program's
//! own cards to the in-process card link, other cards' credit to the acquirer link of the
//! first BIN range that holds them, else to the default acquirer.

use crate::config::{in_bin_range, Config, HOSTED_CARDS_LINK};

/// A range of card numbers by their leading digits (as many as `from` has), and where it goes.
#[derive(Debug, Clone)]
struct BinRange {
    from: String,
    to: String,
    /// The acquirer link, or the hosted program.
    target: String,
}

impl BinRange {
    fn holds(&self, pan_digits: &str) -> bool {
        in_bin_range(pan_digits, &self.from, &self.to)
    }
}

/// The switch's routing tables.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Hosted card programs' BIN ranges (they do not overlap).
    programs: Vec<BinRange>,
    /// Acquirer BIN ranges, first match wins.
    acquirers: Vec<BinRange>,
    default_acquirer: Option<String>,
}

impl Routing {
    pub fn new(config: &Config) -> Routing {
        Routing {
            programs: config
                .hosted
                .programs
                .iter()
                .map(|p| BinRange {
                    from: p.bin_from.clone(),
                    to: p.bin_to.clone(),
                    target: p.id.clone(),
                })
                .collect(),
            acquirers: config
                .routing
                .bins
                .iter()
                .map(|b| BinRange {
                    from: b.from.clone(),
                    to: b.to.clone(),
                    target: b.acquirer.clone(),
                })
                .collect(),
            default_acquirer: config.routing.default_acquirer.clone(),
        }
    }

    /// The hosted program that owns a card number, by id.
    pub fn program_for(&self, pan_digits: &str) -> Option<&str> {
        first_holding(&self.programs, pan_digits)
    }

    /// The acquirer link for a card number: a hosted program's own cards go to the hosted
    /// card link, others to the first matching BIN range, else the default.
    pub fn acquirer_for(&self, pan_digits: &str) -> Option<&str> {
        if self.program_for(pan_digits).is_some() {
            return Some(HOSTED_CARDS_LINK);
        }
        first_holding(&self.acquirers, pan_digits).or(self.default_acquirer.as_deref())
    }
}

fn first_holding<'r>(ranges: &'r [BinRange], pan_digits: &str) -> Option<&'r str> {
    ranges
        .iter()
        .find(|r| r.holds(pan_digits))
        .map(|r| r.target.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(extra: &str) -> Routing {
        let text = format!(
            "data_dir = \"x\"\ncard_key = \"{}\"\n\
             [[link]]\nname = \"acq1\"\nkind = \"acquirer\"\nhosts = [\"127.0.0.1:1\"]\n\
             [[link]]\nname = \"acq2\"\nkind = \"acquirer\"\nhosts = [\"127.0.0.1:2\"]\n{extra}",
            "00".repeat(32)
        );
        let config = Config::from_toml(&text, std::path::Path::new("t.toml")).unwrap();
        Routing::new(&config)
    }

    #[test]
    fn hosted_cards_first_then_bin_ranges_in_order_then_the_default() {
        let r = routing(
            "[routing]\ndefault_acquirer = \"acq1\"\n\
             [[routing.bin]]\nfrom = \"4000\"\nto = \"4999\"\nacquirer = \"acq2\"\n\
             [[routing.bin]]\nfrom = \"40\"\nto = \"49\"\nacquirer = \"acq1\"\n\
             [[hosted.program]]\nid = \"P\"\nkind = \"prepaid\"\nbin_from = \"4100\"\nbin_to = \"4100\"\n",
        );
        assert_eq!(r.program_for("4100000000000001"), Some("P"));
        assert_eq!(r.acquirer_for("4100000000000001"), Some(HOSTED_CARDS_LINK));
        assert_eq!(r.program_for("4200000000000001"), None);
        assert_eq!(r.acquirer_for("4200000000000001"), Some("acq2"));
        assert_eq!(r.acquirer_for("5200000000000001"), Some("acq1"));
        // Shorter than every range's digits: held by none.
        assert_eq!(r.acquirer_for("4"), Some("acq1"));
    }

    #[test]
    fn without_a_default_an_unmatched_card_has_no_acquirer() {
        let r = routing("");
        assert_eq!(r.acquirer_for("4000000000000002"), None);
        assert_eq!(r.program_for("4000000000000002"), None);
    }
}
