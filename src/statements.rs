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

use std::sync::Arc;
use std::time::Duration;

use chrono::{Local, NaiveDate};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, ProgramKind};
use crate::hosted::cards::day_bounds;
use crate::hosted::{Card, Hosted};
use crate::outbox::{Item, Outbox};
use crate::store::Cf;

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
    for card in anonymous_cards(hosted)? {
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
        let st = hosted.statement(&card, day).map_err(|e| e.to_string())?;
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
    Ok(queued)
}

/// Every anonymous card the switch issued.
fn anonymous_cards(hosted: &Hosted) -> Result<Vec<Card>, String> {
    let mut cards = Vec::new();
    for (_, v) in hosted.journal.scan(Cf::HostedCards, b"")? {
        if let Ok(card) = serde_json::from_slice::<Card>(&v) {
            if card.kind == ProgramKind::Anonymous {
                cards.push(card);
            }
        }
    }
    Ok(cards)
}
