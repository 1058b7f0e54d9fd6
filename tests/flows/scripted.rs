//! Scripted upstream hosts for the deterministic flow tests: a wallet issuer or an acquirer
//! that answers in-process (a [`LocalHost`] standing in for a configured link), keeps
//! balances, remembers every request it got, and behaves per account (issuer) or card
//! (acquirer) as the test says: approve, decline with a code, never answer, answer late.
//!
//! It holds to the upstream contract (SPEC §6) the way the TCP simulators do: a money
//! request takes effect when it arrives, whenever (or whether) its answer leaves — so a
//! timed-out leg really did move money, and only its reversal puts it back. Legs are keyed
//! by terminal, STAN and transmission time (what a reversal names in field 90): a repeated
//! request gets the same answer and no second effect, a repeated reversal undoes nothing
//! twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cyberswitch::iso8583::response::{reply, HOST_ECHOED};
use cyberswitch::iso8583::{de, AdditionalAmount, Message, OwnedMessage, ResponseCode, Spec};
use cyberswitch::net::link::LocalHost;
use futures::future::BoxFuture;

/// How the host treats one account or card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Apply and answer at once (the default).
    Approve,
    /// Decline money requests with this code, moving nothing; inquiries and reversals are
    /// answered as usual.
    Decline(&'static str),
    /// Apply every request (inquiries, money, reversals) and never answer.
    Silent,
    /// Apply money requests at once and answer them after this long; inquiries and
    /// reversals are answered at once.
    Late(Duration),
    /// A slow host: a money request is applied only after this long, then answered; a
    /// reversal arriving meanwhile finds nothing to reverse (25).
    SlowApply(Duration),
    /// Approve, with these fields set in the approval as given (a host sending what the
    /// terminal's layout cannot carry).
    ApproveWith(&'static [(u16, &'static [u8])]),
}

/// Whose balances the host keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Accounts (field 102) in the issuer's units; a debit needs the funds.
    Issuer,
    /// Cards (field 2): the net amount approved on each, with no limit.
    Acquirer,
}

/// A request the host got, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub mti: String,
    pub processing_code: String,
    /// The account (issuer) or card number (acquirer).
    pub target: String,
    pub amount: Option<u64>,
    pub stan: u32,
    /// For a reversal: the STAN of the leg it names in field 90.
    pub original_stan: Option<u32>,
    /// The response code given (`None`: never answered).
    pub answered: Option<String>,
}

impl Seen {
    pub fn is_reversal(&self) -> bool {
        self.mti.starts_with("04")
    }
}

/// A money movement, remembered for its reversal and for repeats of its request.
struct Leg {
    target: String,
    /// Signed effect on the target's balance.
    delta: i64,
    reversed: bool,
    answer: OwnedMessage,
}

#[derive(Default)]
struct State {
    balances: HashMap<String, i64>,
    behaviours: HashMap<String, Behaviour>,
    legs: HashMap<String, Leg>,
    seen: Vec<Seen>,
    next_auth: u32,
}

pub struct ScriptedHost {
    kind: Kind,
    spec: Arc<Spec>,
    state: Mutex<State>,
}

/// When the answer leaves.
enum Delivery {
    Now,
    After(Duration),
    Never,
}

impl ScriptedHost {
    /// A wallet issuer with these accounts and opening balances (in its units).
    pub fn issuer(spec: Arc<Spec>, accounts: &[(&str, i64)]) -> Arc<ScriptedHost> {
        let host = ScriptedHost::new(Kind::Issuer, spec);
        host.lock().balances = accounts
            .iter()
            .map(|(id, balance)| (id.to_string(), *balance))
            .collect();
        Arc::new(host)
    }

    /// An acquirer approving any amount on any card (unless told otherwise).
    pub fn acquirer(spec: Arc<Spec>) -> Arc<ScriptedHost> {
        Arc::new(ScriptedHost::new(Kind::Acquirer, spec))
    }

    fn new(kind: Kind, spec: Arc<Spec>) -> ScriptedHost {
        ScriptedHost {
            kind,
            spec,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, treat this account or card so.
    pub fn behave(&self, target: &str, behaviour: Behaviour) {
        self.lock().behaviours.insert(target.to_string(), behaviour);
    }

    /// Open (or set) an issuer account with this balance in units.
    pub fn open_account(&self, account: &str, balance: i64) {
        self.lock().balances.insert(account.to_string(), balance);
    }

    /// An issuer account's balance in units; an acquirer card's net approved amount.
    pub fn balance(&self, target: &str) -> i64 {
        self.lock().balances.get(target).copied().unwrap_or(0)
    }

    /// Every request the host got, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The requests the host got for one account or card.
    pub fn seen_for(&self, target: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.target == target)
            .collect()
    }

    /// How long a money request waits before it is applied, when its target is slow.
    fn slow_apply(&self, frame: &[u8]) -> Option<Duration> {
        let msg = self.spec.decode(frame).ok()?;
        if !matches!(msg.mti().class(), 1 | 2) || msg.transaction_type() == Some(31) {
            return None;
        }
        let target = match self.kind {
            Kind::Issuer => msg.str(de::ACCOUNT_1)?.trim().to_string(),
            Kind::Acquirer => msg.pan().ok()??.expose().to_string(),
        };
        match self.lock().behaviours.get(&target) {
            Some(Behaviour::SlowApply(after)) => Some(*after),
            _ => None,
        }
    }

    /// Decide the answer and apply its effect now; when it leaves is up to the behaviour.
    fn take(&self, frame: &[u8]) -> Option<(OwnedMessage, Delivery)> {
        let msg = self.spec.decode(frame).ok()?;
        let target = match self.kind {
            Kind::Issuer => msg.str(de::ACCOUNT_1)?.trim().to_string(),
            Kind::Acquirer => msg.pan().ok()??.expose().to_string(),
        };
        let mut state = self.lock();
        let behaviour = state
            .behaviours
            .get(&target)
            .copied()
            .unwrap_or(Behaviour::Approve);
        let (answer, money) = match msg.mti().class() {
            4 => (state.reverse(&msg), false),
            1 | 2 if msg.transaction_type() == Some(31) => {
                (self.inquiry(&state, &msg, &target), false)
            }
            1 | 2 => (self.money(&mut state, &msg, &target, behaviour), true),
            _ => (coded(&msg, ResponseCode::InvalidTransaction), false),
        };
        let delivery = match behaviour {
            Behaviour::Silent => Delivery::Never,
            Behaviour::Late(after) if money => Delivery::After(after),
            _ => Delivery::Now,
        };
        let answered = match delivery {
            Delivery::Never => None,
            _ => answer
                .get(de::RESPONSE_CODE)
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        };
        state.seen.push(Seen {
            mti: msg.mti().as_str().to_string(),
            processing_code: msg
                .str(de::PROCESSING_CODE)
                .unwrap_or_default()
                .into_owned(),
            target,
            amount: msg.amount(),
            stan: msg.stan().unwrap_or(0),
            original_stan: msg.original_data().ok().flatten().map(|od| od.stan),
            answered,
        });
        Some((answer, delivery))
    }

    /// 0100/31: the account's balance in field 54.
    fn inquiry(&self, state: &State, msg: &Message<'_>, target: &str) -> OwnedMessage {
        match (self.kind, state.balances.get(target)) {
            (Kind::Issuer, Some(&balance)) => {
                let mut answer = coded(msg, ResponseCode::Approved);
                set_balance(&mut answer, msg, balance);
                answer
            }
            _ => coded(msg, ResponseCode::InvalidCard),
        }
    }

    /// A debit (issuer) or an authorization (acquirer), once per leg.
    fn money(
        &self,
        state: &mut State,
        msg: &Message<'_>,
        target: &str,
        behaviour: Behaviour,
    ) -> OwnedMessage {
        let Some(key) = leg_key(msg) else {
            return coded(msg, ResponseCode::FormatError);
        };
        if let Some(leg) = state.legs.get(&key) {
            return leg.answer.clone();
        }
        if let Behaviour::Decline(code) = behaviour {
            let mut answer = reply(msg, &HOST_ECHOED);
            answer.set(de::RESPONSE_CODE, code.as_bytes());
            return answer;
        }
        let amount = msg.amount().unwrap_or(0) as i64;
        // A refund (20xxxx) gives back what a debit or an authorization takes.
        let amount = if msg.transaction_type() == Some(20) {
            -amount
        } else {
            amount
        };
        let delta = match self.kind {
            Kind::Issuer => -amount,
            Kind::Acquirer => amount,
        };
        let after = match (self.kind, state.balances.get(target)) {
            (Kind::Issuer, None) => return coded(msg, ResponseCode::InvalidCard),
            (Kind::Issuer, Some(&b)) if b + delta < 0 => {
                return coded(msg, ResponseCode::InsufficientFunds)
            }
            (_, b) => b.copied().unwrap_or(0) + delta,
        };
        state.balances.insert(target.to_string(), after);
        state.next_auth += 1;
        let mut answer = coded(msg, ResponseCode::Approved);
        answer.set(de::AUTH_CODE, format!("A{:05}", state.next_auth).as_bytes());
        if self.kind == Kind::Issuer {
            set_balance(&mut answer, msg, after);
        }
        if let Behaviour::ApproveWith(fields) = behaviour {
            for (n, v) in fields {
                answer.set(*n, v);
            }
        }
        state.legs.insert(
            key,
            Leg {
                target: target.to_string(),
                delta,
                reversed: false,
                answer: answer.clone(),
            },
        );
        answer
    }
}

impl State {
    /// 0400/0420/0421: undo the leg named in field 90. Unknown: 25; already undone: 00.
    fn reverse(&mut self, msg: &Message<'_>) -> OwnedMessage {
        let Some(key) = original_leg_key(msg) else {
            return coded(msg, ResponseCode::FormatError);
        };
        let Some(leg) = self.legs.get_mut(&key) else {
            return coded(msg, ResponseCode::OriginalNotFound);
        };
        if !leg.reversed {
            leg.reversed = true;
            *self.balances.entry(leg.target.clone()).or_default() -= leg.delta;
        }
        coded(msg, ResponseCode::Approved)
    }
}

impl LocalHost for ScriptedHost {
    fn handle(&self, frame: Bytes) -> BoxFuture<'_, Option<OwnedMessage>> {
        if let Some(after) = self.slow_apply(&frame) {
            return Box::pin(async move {
                tokio::time::sleep(after).await;
                self.take(&frame).map(|(answer, _)| answer)
            });
        }
        let taken = self.take(&frame);
        Box::pin(async move {
            let (answer, delivery) = taken?;
            match delivery {
                Delivery::Now => Some(answer),
                Delivery::After(after) => {
                    tokio::time::sleep(after).await;
                    Some(answer)
                }
                Delivery::Never => None,
            }
        })
    }
}

fn coded(msg: &Message<'_>, code: ResponseCode) -> OwnedMessage {
    let mut answer = reply(msg, &HOST_ECHOED);
    answer.set_code(code);
    answer
}

fn set_balance(answer: &mut OwnedMessage, msg: &Message<'_>, balance: i64) {
    let block = AdditionalAmount {
        account_type: *b"60",
        amount_type: *b"02",
        currency: msg.currency().unwrap_or(410),
        amount: balance,
    };
    answer.set(
        de::ADDITIONAL_AMOUNTS,
        &AdditionalAmount::encode_all(&[block]),
    );
}

/// A leg's key: terminal, STAN, transmission time.
fn leg_key(msg: &Message<'_>) -> Option<String> {
    Some(key_of(msg, msg.stan()?, msg.transmission_time()?))
}

/// The key of the leg a reversal names in field 90.
fn original_leg_key(msg: &Message<'_>) -> Option<String> {
    let od = msg.original_data().ok()??;
    Some(key_of(msg, od.stan, od.transmission_time))
}

fn key_of(msg: &Message<'_>, stan: u32, transmission_time: u64) -> String {
    let terminal = msg.terminal_id().unwrap_or_default();
    format!("{}/{stan:06}/{transmission_time:010}", terminal.trim())
}
