//! F15: each anonymous card's statement of the previous day, pushed to the partner that
//! issued it through the callback outbox (the seed: the next-day digest is pushed, not
//! pulled).
//!
//! A daily task rather than a step of the cut-over: a card's statement is of a local
//! calendar day (what `GET /v1/cards/{id}/statement` gives), not of a business date, and a
//! task that looks every `outbox.statements_check_s` catches up by itself after the switch
//! was down at midnight. Each (card, day) is queued once: its outbox id is
//! `stmt-CARD-YYYY-MM-DD`, and the outbox refuses an id it has. Days looked at: the last
//! [`CATCH_UP_DAYS`] before today, for cards issued before the day ended.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Local, NaiveDate};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, ProgramKind};
use crate::hosted::cards::day_bounds;
use crate::hosted::{Card, Hosted};
use crate::outbox::{Item, Outbox};
use crate::store::{Cf, Store};

/// How many past days a look covers (a switch down over several midnights still pushes them).
pub const CATCH_UP_DAYS: u64 = 3;

/// Queue the statements of the days before today now and then, until `stop`.
pub async fn daily(
    hosted: Arc<Hosted>,
    outbox: Arc<Outbox>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    if !config
        .partners
        .iter()
        .any(|p| p.daily_statements && p.callback_url.is_some())
    {
        return;
    }
    let every = Duration::from_secs(config.outbox.statements_check_s.max(1));
    // Days whose every statement is queued: a day that has ended gets no new cards, so it
    // is not looked at again (each look reads every hosted card).
    let mut done: std::collections::BTreeSet<NaiveDate> = Default::default();
    loop {
        let today = clock.now().with_timezone(&Local).date_naive();
        for back in 1..=CATCH_UP_DAYS {
            let Some(day) = today.checked_sub_days(chrono::Days::new(back)) else {
                continue;
            };
            if done.contains(&day) {
                continue;
            }
            match queue_day(&hosted, &outbox, &config, clock.now_ms(), day).await {
                Ok(n) => {
                    done.insert(day);
                    if n > 0 {
                        tracing::info!(%day, statements = n, "daily statements queued for partners");
                    }
                }
                Err(e) => tracing::error!(%day, error = %e, "daily statements not queued"),
            }
        }
        // Only the days still looked at are remembered.
        if let Some(oldest) = today.checked_sub_days(chrono::Days::new(CATCH_UP_DAYS)) {
            done.retain(|d| *d >= oldest);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Queue the statement of `day` of every anonymous card whose partner takes them (and that
/// existed by the end of the day); returns how many were new.
pub async fn queue_day(
    hosted: &Hosted,
    outbox: &Outbox,
    config: &Config,
    now_ms: i64,
    day: NaiveDate,
) -> Result<usize, String> {
    let (_, end) = day_bounds(day);
    let mut queued = 0;
    let mut after = Vec::new();
    loop {
        let (cards, next) = anonymous_cards(hosted.journal.store(), &after, CARDS_PER_READ)?;
        for card in cards {
            let Some(owner) = &card.owner else { continue };
            let takes = config
                .partner(owner)
                .is_some_and(|p| p.daily_statements && p.callback_url.is_some());
            if !takes || card.issued_ms >= end {
                continue;
            }
            let id = format!("stmt-{}-{day}", card.id);
            if outbox.get(&id)?.is_some() {
                continue;
            }
            let st = hosted
                .statement(&card, day)
                .await
                .map_err(|e| e.to_string())?;
            let body = serde_json::json!({
                "event": "card.statement",
                "partner": owner,
                "card": card.id,
                "card_number": card.masked,
                "program": card.program,
                "statement": st,
            });
            if outbox
                .enqueue(Item::new(id, owner, "card.statement", &body, now_ms))
                .await?
            {
                queued += 1;
            }
        }
        match next {
            Some(key) => after = key,
            None => return Ok(queued),
        }
    }
}

/// Hosted cards read at a time: the card store is read a page at a time, not copied whole.
const CARDS_PER_READ: usize = 1_000;

/// The anonymous cards among the next `max` hosted cards from key `from` (included), and
/// the key to go on from when there are more.
fn anonymous_cards(
    store: &Store,
    from: &[u8],
    max: usize,
) -> Result<(Vec<Card>, Option<Vec<u8>>), String> {
    let mut cards = Vec::new();
    let mut read = 0;
    let mut next = None;
    store.for_each_from(Cf::HostedCards, from, |k, v| {
        if read == max {
            next = Some(k.to_vec());
            return ControlFlow::Break(());
        }
        read += 1;
        if let Ok(card) = serde_json::from_slice::<Card>(v) {
            if card.kind == ProgramKind::Anonymous {
                cards.push(card);
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok((cards, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosted::CardStatus;

    fn card(id: &str, kind: ProgramKind) -> Card {
        Card {
            id: id.into(),
            program: "P".into(),
            kind,
            masked: "627200******0016".into(),
            status: CardStatus::Active,
            expiry: "3012".into(),
            pin_hash: None,
            pin_failures: 0,
            account: format!("card:{id}"),
            points_account: None,
            owner: Some("partner".into()),
            holder: None,
            master: None,
            per_txn_limit: None,
            daily_limit: None,
            issued_ms: 0,
        }
    }

    /// The cards are read a page at a time, and the pages together give every anonymous
    /// card once, whatever the page size.
    #[test]
    fn anonymous_cards_are_read_a_page_at_a_time_each_once() {
        let store = Store::memory();
        let mut batch = store.batch();
        let mut anonymous = Vec::new();
        for i in 0..11 {
            let id = format!("c{i:02}");
            let kind = if i % 3 == 0 {
                ProgramKind::Prepaid
            } else {
                anonymous.push(id.clone());
                ProgramKind::Anonymous
            };
            let value = serde_json::to_vec(&card(&id, kind)).unwrap();
            batch.put(Cf::HostedCards, id.as_bytes(), &value).unwrap();
        }
        store.write(batch, false).unwrap();
        for page in [1, 2, 4, 11, 50] {
            let (mut from, mut seen, mut reads) = (Vec::new(), Vec::new(), 0);
            loop {
                let (cards, next) = anonymous_cards(&store, &from, page).unwrap();
                assert!(cards.len() <= page);
                seen.extend(cards.into_iter().map(|c| c.id));
                reads += 1;
                match next {
                    Some(k) => from = k,
                    None => break,
                }
            }
            assert_eq!(seen, anonymous, "page of {page}");
            assert_eq!(reads, 11usize.div_ceil(page), "page of {page}");
        }
    }
}
