//! The outbox's schedule: when each pending callback may be tried (see [`super::Outbox`]).

use super::{Item, ItemStatus};

/// When each pending item may be tried: items by id, each group's items oldest first (only
/// a group's oldest may go: a partner hears `va.reversed` after `va.paid`), and the items
/// that may go — ungrouped ones and each group's oldest — by when they are due. The worker
/// read and parsed every pending item from the store for every batch it sent, so a partner
/// away for a day made its backlog cost in proportion to its square.
#[derive(Default)]
pub(super) struct Schedule {
    items: std::collections::HashMap<String, Slot>,
    groups: std::collections::HashMap<String, std::collections::BTreeSet<(i64, String)>>,
    ready: std::collections::BTreeSet<(i64, i64, String)>,
}

#[derive(Clone)]
struct Slot {
    created_ms: i64,
    next_at_ms: i64,
    group: Option<String>,
    partner: String,
}

impl Schedule {
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Take in an item as the store now holds it: pending (when it is due next) or not.
    pub(super) fn set(&mut self, item: &Item) {
        self.remove(&item.id);
        if item.status != ItemStatus::Pending {
            return;
        }
        let slot = Slot {
            created_ms: item.created_ms,
            next_at_ms: item.next_at_ms,
            group: item.group.clone(),
            partner: item.partner.clone(),
        };
        let group = slot.group.clone();
        self.change_group(group.as_deref(), |s| {
            if let Some(g) = &slot.group {
                s.groups
                    .entry(g.clone())
                    .or_default()
                    .insert((slot.created_ms, item.id.clone()));
            }
            s.items.insert(item.id.clone(), slot);
        });
        if group.is_none() {
            self.make_ready(&item.id);
        }
    }

    pub(super) fn remove(&mut self, id: &str) {
        let Some(slot) = self.items.get(id).cloned() else {
            return;
        };
        if slot.group.is_none() {
            self.ready
                .remove(&(slot.next_at_ms, slot.created_ms, id.to_string()));
            self.items.remove(id);
            return;
        }
        self.change_group(slot.group.as_deref(), |s| {
            if let Some(members) = slot.group.as_ref().and_then(|g| s.groups.get_mut(g)) {
                members.remove(&(slot.created_ms, id.to_string()));
                if members.is_empty() {
                    if let Some(g) = &slot.group {
                        s.groups.remove(g);
                    }
                }
            }
            s.items.remove(id);
        });
    }

    /// Not before `at` (a failed attempt whose outcome could not be written).
    pub(super) fn retry_at(&mut self, id: &str, at: i64) {
        let Some(slot) = self.items.get(id).cloned() else {
            return;
        };
        let was_ready = self
            .ready
            .remove(&(slot.next_at_ms, slot.created_ms, id.to_string()));
        if let Some(s) = self.items.get_mut(id) {
            s.next_at_ms = at;
        }
        if was_ready {
            self.make_ready(id);
        }
    }

    /// The `max` oldest pending items (of one partner), after (creation time, id) `after`:
    /// their creation times (never below 0, as the time indexes hold them) and ids.
    pub(super) fn oldest(
        &self,
        partner: Option<&str>,
        after: Option<(i64, &str)>,
        max: usize,
    ) -> Vec<(i64, String)> {
        let mut found: Vec<(i64, &String)> = self
            .items
            .iter()
            .filter(|(_, s)| partner.is_none_or(|p| p == s.partner))
            .map(|(id, s)| (s.created_ms.max(0), id))
            .filter(|(at, id)| after.is_none_or(|(t, a)| (*at, id.as_str()) > (t, a)))
            .collect();
        found.sort();
        found
            .into_iter()
            .take(max)
            .map(|(at, id)| (at, id.clone()))
            .collect()
    }

    /// Up to `max` ids due by `now`, soonest first, and when the next one falls due.
    pub(super) fn due(&self, now: i64, max: usize) -> (Vec<String>, Option<i64>) {
        let mut due = Vec::new();
        for (at, _, id) in &self.ready {
            if *at > now {
                return (due, Some(*at));
            }
            if due.len() == max {
                return (due, None);
            }
            due.push(id.clone());
        }
        (due, None)
    }

    /// Change a group's members: its oldest leaves `ready` before, the (maybe new) oldest
    /// enters it after.
    fn change_group(&mut self, group: Option<&str>, change: impl FnOnce(&mut Schedule)) {
        let head = |s: &Schedule| {
            group
                .and_then(|g| s.groups.get(g))
                .and_then(|m| m.first())
                .map(|(_, id)| id.clone())
        };
        if let Some(id) = head(self) {
            if let Some(slot) = self.items.get(&id) {
                self.ready
                    .remove(&(slot.next_at_ms, slot.created_ms, id.clone()));
            }
        }
        change(self);
        if let Some(id) = head(self) {
            self.make_ready(&id);
        }
    }

    fn make_ready(&mut self, id: &str) {
        if let Some(slot) = self.items.get(id) {
            self.ready
                .insert((slot.next_at_ms, slot.created_ms, id.to_string()));
        }
    }
}
