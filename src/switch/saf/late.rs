//! Late answers: an approval that arrives after its leg timed out gets a reversal of its own.

use super::{leg_fields, Saf};
use crate::iso8583::{OwnedMessage, ResponseCode};
use crate::journal::{Entry, EntryKind, Step};
use crate::net::link::LateAnswers;

impl LateAnswers for Saf {
    /// A late answer to a money request. Its leg was queued for reversal at the timeout, but
    /// that reversal may have been acknowledged with 25 (the host had not applied the leg
    /// yet) before the late approval was applied: so a late approval gets a reversal of its
    /// own. A host answers a repeated reversal as the first, so if the first one did undo the
    /// leg this one changes nothing.
    fn late_answer(&self, link: &str, request: OwnedMessage, answer: OwnedMessage) {
        // Requests (function digit 0) only: an advice that is late (the queue's own
        // completion, 0220/0221) is repeated by the queue until acknowledged, and a late
        // acknowledgement of it has taken exactly what the advice said.
        let request_not_advice = request.mti().as_bytes()[2] == b'0';
        let money = matches!(request.mti().class(), 1 | 2)
            && request_not_advice
            && request.get(3).is_some_and(|pc| !pc.starts_with(b"31"));
        if !money || answer.code() != Some(ResponseCode::Approved) {
            return;
        }
        // A refund leg (0200/20 naming the leg it gives back to, F8) that got no answer in
        // time is not reversed but pushed through as an advice: the money is owed to the card.
        // Its late approval is that money arriving; reversing it would take back a refund the
        // terminal was told was given (the advice, a repeat, changes nothing after it).
        if is_refund_leg(&request) {
            metrics::counter!("cyberswitch_late_refund_approvals_total", "link" => link.to_string())
                .increment(1);
            tracing::info!(
                link,
                "late approval of a refund leg: it stands, as its advice says"
            );
            return;
        }
        metrics::counter!("cyberswitch_late_approvals_total", "link" => link.to_string())
            .increment(1);
        let Some(saf) = self.me.upgrade() else { return };
        let link = link.to_string();
        let working = self.late_reversals.enter();
        tokio::spawn(async move {
            let _working = working;
            if let Err(e) = saf.reverse_late_approval(&link, &request).await {
                tracing::error!(link, error = %e, "late approval: its reversal could not be queued");
            }
        });
    }
}

impl Saf {
    /// Queue (durably) the reversal of a leg approved after its timeout.
    async fn reverse_late_approval(
        &self,
        link: &str,
        request: &OwnedMessage,
    ) -> Result<(), String> {
        let stan = request
            .get(11)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let time = request
            .get(7)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        // The leg's own key, under which its reversal is sealed and journaled.
        let txn = format!("late|{link}|{stan}|{time}");
        let amount = request
            .get(4)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        let sealed = self
            .journal
            .sealer()
            .seal(&leg_fields(request).pack(), txn.as_bytes());
        let mut step = Step::new();
        let queued = self.enqueue(&mut step, link, &txn, (0, amount), &sealed);
        step.append(Entry::new(
            EntryKind::Saf,
            &txn,
            link,
            "late approval: reversed again".to_string(),
        ));
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        tracing::warn!(link, "late approval: a reversal of its own is queued");
        self.publish(vec![queued]);
        Ok(())
    }
}

/// A refund leg as [`crate::switch::refund`] sends it: 0200, processing code 20, naming the leg
/// it gives back to in field 90 (a terminal's own refund relayed as plain credit names none).
fn is_refund_leg(request: &OwnedMessage) -> bool {
    request.mti().class() == 2
        && request.get(3).is_some_and(|pc| pc.starts_with(b"20"))
        && request.get(crate::iso8583::de::ORIGINAL_DATA).is_some()
}
