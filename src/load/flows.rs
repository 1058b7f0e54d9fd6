//! The flows a load run mixes, the requests they send, and the answers they expect.

use std::str::FromStr;

use crate::demo;
use crate::iso8583::tlv::SwitchData;
use crate::iso8583::{Mti, OriginalData, OwnedMessage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// F2: 0100 balance inquiry over the card's wallets.
    Inquiry,
    /// F3: 0200 paid from one chosen wallet (`WS`).
    Wallet,
    /// F4: 0200 by automatic tender.
    Auto,
    /// F5: 0200 with the wallets capped (`WC`) at half: the rest goes to the acquirer.
    Split,
    /// F6: 0200 on a card without wallets, relayed to the acquirer.
    Credit,
    /// F7: 0400 of an earlier approved purchase of the same connection.
    Reversal,
    /// 0100 purchase authorization on a card without wallets: the acquirer holds the amount.
    Authorization,
    /// 0220 completing an earlier approved authorization of the same connection (SPEC §7),
    /// for its whole amount: a completion advice through the store-and-forward queue.
    Completion,
    /// F8: 0200/20 refunding an earlier approved purchase of the same connection whole,
    /// naming it in field 90: each of its legs given back.
    Refund,
}

impl Flow {
    pub const ALL: [Flow; 9] = [
        Flow::Inquiry,
        Flow::Wallet,
        Flow::Auto,
        Flow::Split,
        Flow::Credit,
        Flow::Reversal,
        Flow::Authorization,
        Flow::Completion,
        Flow::Refund,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flow::Inquiry => "inquiry",
            Flow::Wallet => "wallet",
            Flow::Auto => "auto",
            Flow::Split => "split",
            Flow::Credit => "credit",
            Flow::Reversal => "reversal",
            Flow::Authorization => "auth",
            Flow::Completion => "complete",
            Flow::Refund => "refund",
        }
    }

    /// The flow whose approval this one names in field 90 (itself for the others): what is
    /// sent instead while nothing of that kind is approved yet, and always against the echo
    /// server, which approves nothing.
    pub fn origin(self) -> Flow {
        match self {
            Flow::Reversal | Flow::Refund => Flow::Wallet,
            Flow::Completion => Flow::Authorization,
            f => f,
        }
    }

    /// The answer's MTI and response code when all is well.
    pub fn expected(self) -> (&'static [u8; 4], &'static [u8]) {
        let mti = match self {
            Flow::Inquiry | Flow::Authorization => b"0110",
            Flow::Reversal => b"0410",
            Flow::Completion => b"0230",
            _ => b"0210",
        };
        (mti, crate::iso8583::ResponseCode::Approved.as_bytes())
    }
}

/// Weights per flow, in percent or any unit (normalised).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(Flow, u32)>);

impl Default for Mix {
    /// SPEC §12 default: 30% inquiry, 25% chosen wallet, 15% automatic, 15% split tender,
    /// 10% plain credit, 5% reversal.
    fn default() -> Mix {
        Mix(vec![
            (Flow::Inquiry, 30),
            (Flow::Wallet, 25),
            (Flow::Auto, 15),
            (Flow::Split, 15),
            (Flow::Credit, 10),
            (Flow::Reversal, 5),
        ])
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `inquiry=30,wallet=25,…`; flows left out get weight 0.
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("mix: {part:?} is not flow=weight"))?;
            let flow = Flow::ALL
                .into_iter()
                .find(|f| f.name() == name.trim())
                .ok_or_else(|| {
                    format!("mix: unknown flow {name:?} (inquiry, wallet, auto, split, credit, reversal, auth, complete, refund)")
                })?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("mix: weight of {name} is not a number"))?;
            weights.push((flow, w));
        }
        if weights.iter().all(|(_, w)| *w == 0) {
            return Err("mix: every weight is zero".into());
        }
        Ok(Mix(weights))
    }
}

impl Mix {
    /// The flow for a uniform draw `x` in `0..total()`.
    pub fn pick(&self, mut x: u32) -> Flow {
        for (flow, w) in &self.0 {
            if x < *w {
                return *flow;
            }
            x -= w;
        }
        self.0.last().map_or(Flow::Inquiry, |(f, _)| *f)
    }

    pub fn total(&self) -> u32 {
        self.0.iter().map(|(_, w)| w).sum()
    }
}

/// What identifies one request of a connection.
pub struct RequestIds<'a> {
    pub terminal: &'a str,
    pub stan: u32,
    pub transmission_time: &'a str,
}

/// Build the request of a flow for bulk card `card` (reversals are built by [`reversal`]).
pub fn request(flow: Flow, card: usize, amount: u64, ids: &RequestIds<'_>) -> OwnedMessage {
    let bulk = &demo::bulk_cards_one(card);
    let (mti, pc, pan) = match flow {
        Flow::Inquiry => (b"0100", "310000", bulk.pan.clone()),
        Flow::Credit => (b"0200", "000000", demo::plain_card(card)),
        Flow::Authorization => (b"0100", "000000", demo::plain_card(card)),
        _ => (b"0200", "000000", bulk.pan.clone()),
    };
    let mut m = OwnedMessage::new(Mti::new(mti).unwrap_or_else(|| unreachable!("constant MTI")));
    m.set(2, pan.as_bytes()).set(3, pc.as_bytes()).set_number(
        4,
        if flow == Flow::Inquiry { 0 } else { amount },
        12,
    );
    header(&mut m, ids);
    let mut sd = SwitchData::new();
    match flow {
        Flow::Wallet => {
            sd.push("WS", bulk.emoney.as_bytes());
        }
        Flow::Split => {
            sd.push("WC", (amount / 2).to_string().as_bytes());
        }
        _ => {}
    }
    if !sd.is_empty() {
        m.set(48, sd.as_bytes());
    }
    m
}

fn header(m: &mut OwnedMessage, ids: &RequestIds<'_>) {
    m.set(7, ids.transmission_time.as_bytes())
        .set_number(11, u64::from(ids.stan), 6)
        .set(12, &ids.transmission_time.as_bytes()[4..])
        .set(13, &ids.transmission_time.as_bytes()[..4])
        .set(41, ids.terminal.as_bytes())
        .set(42, b"LOADMERCHANT001")
        .set(49, b"410");
}

/// The 0400 of an approved `original` (same terminal), with field 90 naming it.
pub fn reversal(original: &OwnedMessage, ids: &RequestIds<'_>) -> OwnedMessage {
    follow_up(b"0400", original, ids)
}

/// The 0220 completing an approved authorization (same terminal) for its whole amount.
pub fn completion(original: &OwnedMessage, ids: &RequestIds<'_>) -> OwnedMessage {
    follow_up(b"0220", original, ids)
}

/// The 0200/20 refunding an approved purchase (same terminal) whole, naming it in field 90.
pub fn refund(original: &OwnedMessage, ids: &RequestIds<'_>) -> OwnedMessage {
    let mut r = follow_up(b"0200", original, ids);
    r.set(3, b"200000");
    r
}

/// A request naming `original` in field 90, with its card, processing code and amount.
fn follow_up(mti: &[u8; 4], original: &OwnedMessage, ids: &RequestIds<'_>) -> OwnedMessage {
    let mut r = OwnedMessage::new(Mti::new(mti).unwrap_or_else(|| unreachable!("constant MTI")));
    for n in [2, 3, 4] {
        if let Some(v) = original.get(n) {
            r.set(n, v);
        }
    }
    header(&mut r, ids);
    let num = |n: u16| {
        original
            .get(n)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    r.set_original_data(&OriginalData {
        mti: original.mti(),
        stan: num(11) as u32, // ok: six digits
        transmission_time: num(7),
        acquirer_id: 0,
        forwarder_id: 0,
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let m: Mix = "inquiry=1,credit=3".parse().unwrap();
        assert_eq!(m.total(), 4);
        assert_eq!(m.pick(0), Flow::Inquiry);
        assert_eq!(m.pick(1), Flow::Credit);
        assert_eq!(m.pick(3), Flow::Credit);
        assert!("inquiry=0".parse::<Mix>().is_err());
        assert!("bogus=1".parse::<Mix>().is_err());
        assert_eq!(Mix::default().total(), 100);
    }
}
