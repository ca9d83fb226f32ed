//! Inflight commits and voids: applied now (`skip_queue`) or queued (the default: the hold
//! is marked as having a pending action, which makes a second queued action a 409, and a
//! worker carries it out). Expiry and auto-commit dates go through the queued path.

use super::{stored_or_refused, Ledger};
use crate::domain::ids::{self, shard_of};
use crate::domain::inflight::{self, HoldAction, HoldState};
use crate::domain::{TransactionRecord, TransactionStatus};
use crate::entity::inflight_hold;
use crate::store::{BatchItem, BatchUnit, HoldActionRequest, Refusal};
use crate::LedgerError;
use bigdecimal::num_bigint::BigInt;
use chrono::Utc;
use std::str::FromStr;

/// Queue entries for pending hold actions carry this prefix before the hold id.
pub const ACTION_ENTRY_PREFIX: &str = "act:";

/// A commit or void of a hold, or of every hold under a parent (queued parent, split, bulk).
#[derive(Debug, Clone)]
pub struct HoldCommand {
    pub id: String,
    pub action: HoldAction,
    /// A partial commit in major units (`amount`), converted with the hold's precision.
    pub amount_major: Option<String>,
    pub skip_queue: bool,
}

#[derive(Debug, Clone)]
pub enum HoldReply {
    /// The rows written (APPLIED for a commit, VOID for a void), one per hold.
    Applied(Vec<TransactionRecord>),
    /// Queued: the hold rows the action will apply to.
    Queued(Vec<TransactionRecord>),
}

fn action_text(action: &HoldAction, action_id: &str) -> String {
    match action {
        HoldAction::Commit(Some(amount)) => format!("commit:{amount}:{action_id}"),
        HoldAction::Commit(None) => format!("commit::{action_id}"),
        HoldAction::Void => format!("void::{action_id}"),
    }
}

fn parse_action_text(text: &str) -> Option<(HoldAction, String)> {
    let mut parts = text.splitn(3, ':');
    let (kind, amount, action_id) = (parts.next()?, parts.next()?, parts.next()?);
    let action = match (kind, amount) {
        ("void", _) => HoldAction::Void,
        ("commit", "") => HoldAction::Commit(None),
        ("commit", amount) => HoldAction::Commit(Some(BigInt::from_str(amount).ok()?)),
        _ => return None,
    };
    Some((action, action_id.to_owned()))
}

/// The row a commit or void writes; its amount is decided in the database transaction.
fn action_row(
    hold: &TransactionRecord,
    action: &HoldAction,
    reference: String,
) -> TransactionRecord {
    let mut row = hold.clone();
    row.transaction_id = ids::new_id(ids::TRANSACTION_PREFIX);
    row.parent_transaction = Some(hold.transaction_id.clone());
    row.reference = reference;
    row.status = match action {
        HoldAction::Commit(_) => TransactionStatus::Applied,
        HoldAction::Void => TransactionStatus::Void,
    };
    row.inflight = false;
    row.created_at = Utc::now();
    row.effective_date = Some(row.created_at);
    row.inflight_expiry_date = None;
    row.inflight_commit_date = None;
    row
}

impl Ledger {
    /// `PUT /transactions/inflight/:id`.
    pub async fn hold_action(&self, command: HoldCommand) -> Result<HoldReply, LedgerError> {
        let ledger = self.clone();
        self.detached(async move { ledger.hold_action_now(command).await })
            .await
    }

    #[tracing::instrument(skip_all, fields(id = %command.id, skip_queue = command.skip_queue))]
    async fn hold_action_now(&self, command: HoldCommand) -> Result<HoldReply, LedgerError> {
        let holds = self.store().holds_for(&command.id).await?;
        if holds.is_empty() {
            let row = self.store().transaction(&command.id).await?;
            return Err(LedgerError::NotInflight(row.transaction_id));
        }
        let rows = self
            .store()
            .transactions_by_ids(holds.iter().map(|h| h.hold_id.clone()).collect())
            .await?;
        let mut pairs = Vec::with_capacity(holds.len());
        for hold in &holds {
            let row = rows
                .iter()
                .find(|r| r.transaction_id == hold.hold_id)
                .cloned()
                .ok_or_else(|| LedgerError::TransactionNotFound(hold.hold_id.clone()))?;
            let action = match (&command.action, &command.amount_major) {
                (HoldAction::Commit(None), Some(major)) => {
                    HoldAction::Commit(Some(row.precision.major_to_minor(major)?))
                }
                (action, _) => action.clone(),
            };
            pairs.push((hold, row, action));
        }
        if !command.skip_queue {
            return self.queue_hold_actions(pairs).await;
        }
        let mut items = Vec::new();
        let mut actors = Vec::new();
        for (hold, row, action) in pairs {
            for id in [&hold.source, &hold.destination] {
                actors.push((id.clone(), self.registry().actor(id).await?));
            }
            let child = action_row(&row, &action, ids::new_id("ref"));
            let request = HoldActionRequest {
                hold_id: hold.hold_id.clone(),
                action,
                clears_pending: false,
            };
            items.push(BatchItem {
                record: child,
                changes: Vec::new(),
                refusal: Refusal::Fail,
                hold_action: Some(request),
            });
        }
        let mode = crate::domain::batch::UnitMode::Independent;
        let outcomes = self.submit(BatchUnit::new(mode, items), actors).await?;
        let rows = outcomes
            .into_iter()
            .map(stored_or_refused)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HoldReply::Applied(rows))
    }

    async fn queue_hold_actions(
        &self,
        pairs: Vec<(&inflight_hold::Model, TransactionRecord, HoldAction)>,
    ) -> Result<HoldReply, LedgerError> {
        // Refusals knowable now are answered now, as Blnk's pre-validation does (the worker
        // stays the authority): else an over-commit would be a 200 the worker drops.
        for (hold, _, action) in &pairs {
            let state = HoldState::parse(&hold.state).unwrap_or(HoldState::Voided);
            inflight::decide(state, &hold.remaining.0, action)
                .map_err(|refusal| LedgerError::hold_refused(&hold.hold_id, refusal))?;
        }
        // Mark every hold first; if one cannot be marked, take back the marks this request
        // made (each names this request's action), so a refused request leaves nothing queued.
        let mut marked: Vec<(&inflight_hold::Model, String)> = Vec::new();
        let mut queued = Vec::new();
        for (hold, row, action) in pairs {
            let text = action_text(&action, &ids::new_id("act"));
            if !self.store().mark_hold_pending(&hold.hold_id, &text).await? {
                for (earlier, earlier_text) in &marked {
                    self.store()
                        .unmark_hold_pending(&earlier.hold_id, earlier_text)
                        .await?;
                }
                let current = self.store().hold(&hold.hold_id).await?;
                return Err(match current.map(|h| h.state).as_deref() {
                    Some("VOID") => LedgerError::AlreadyVoided(hold.hold_id.clone()),
                    Some("COMMITTED") => LedgerError::AlreadyCommitted(hold.hold_id.clone()),
                    _ => LedgerError::ActionAlreadyQueued(hold.hold_id.clone()),
                });
            }
            marked.push((hold, text));
            queued.push(row);
        }
        for (hold, _) in &marked {
            self.enqueue_hold_action(hold).await;
        }
        Ok(HoldReply::Queued(queued))
    }

    async fn enqueue_hold_action(&self, hold: &inflight_hold::Model) {
        let queue = self.queue();
        let entry = format!("{ACTION_ENTRY_PREFIX}{}", hold.hold_id);
        if let Err(error) = queue
            .enqueue(shard_of(&hold.source, queue.shard_count()), &entry)
            .await
        {
            tracing::warn!(%error, hold_id = %hold.hold_id, "enqueue of a hold action failed; the sweep retries");
        }
    }

    /// Carries out a hold's pending action (a queue worker's job). Idempotent: the child's
    /// reference names the action, and the pending mark is cleared in the same commit.
    pub async fn run_pending_hold_action(&self, hold_id: &str) -> Result<(), LedgerError> {
        let Some(hold) = self.store().hold(hold_id).await? else {
            return Ok(());
        };
        let Some((action, action_id)) = hold.pending_action.as_deref().and_then(parse_action_text)
        else {
            return Ok(());
        };
        let row = self.store().transaction(hold_id).await?;
        let kind = if matches!(action, HoldAction::Void) {
            "void"
        } else {
            "commit"
        };
        let child = action_row(&row, &action, format!("{hold_id}_{kind}_{action_id}"));
        let request = HoldActionRequest {
            hold_id: hold_id.to_owned(),
            action,
            clears_pending: true,
        };
        let item = BatchItem {
            record: child,
            changes: Vec::new(),
            refusal: Refusal::Fail,
            hold_action: Some(request),
        };
        let mut actors = Vec::new();
        for id in [&hold.source, &hold.destination] {
            if let Some(actor) = self.registry().live(id) {
                actors.push((id.clone(), actor));
            }
        }
        let outcomes = self.submit(BatchUnit::single(item), actors).await?;
        match outcomes.into_iter().next() {
            Some(crate::store::ItemOutcome::Refused(error)) => {
                tracing::info!(%error, hold_id, "queued hold action refused");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Marks due expiries (void) and auto-commits, then queues them; returns how many.
    pub async fn queue_due_hold_actions(&self, limit: u64) -> Result<usize, LedgerError> {
        let due = self.store().due_holds(Utc::now(), limit).await?;
        let mut count = 0;
        for hold in &due {
            let now = Utc::now();
            let action = match (hold.commit_at, hold.expires_at) {
                (Some(at), _) if at <= now => HoldAction::Commit(None),
                _ => HoldAction::Void,
            };
            let label = if matches!(action, HoldAction::Void) {
                "expiry"
            } else {
                "autocommit"
            };
            if self
                .store()
                .mark_hold_pending(&hold.hold_id, &action_text(&action, label))
                .await?
            {
                self.enqueue_hold_action(hold).await;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Enqueues again every pending hold action (after a lost queue entry or a crash).
    pub async fn requeue_pending_hold_actions(&self, limit: u64) -> Result<usize, LedgerError> {
        let pending = self.store().pending_holds(limit).await?;
        for hold in &pending {
            self.enqueue_hold_action(hold).await;
        }
        Ok(pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_actions_round_trip_through_text() {
        for action in [
            HoldAction::Void,
            HoldAction::Commit(None),
            HoldAction::Commit(Some(BigInt::from(42))),
        ] {
            let text = action_text(&action, "act_1");
            assert_eq!(parse_action_text(&text), Some((action, "act_1".to_owned())));
        }
        assert_eq!(parse_action_text("bogus"), None);
    }
}
