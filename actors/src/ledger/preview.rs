//! Dry runs: what a request would do to the balances, computed with the same admission rules
//! as the committer against the balances' current rows. Nothing is written (not even an
//! `@indicator` balance: one that does not exist yet is shown as `virtual`).

use super::refund::RefundRequest;
use super::transfer::{record_changes, Legs, TransferRequest};
use super::{HoldCommand, Ledger};
use crate::domain::balance::{BalanceAmounts, GuardedChange};
use crate::domain::batch::{admit_units, Admission, Unit, UnitMode};
use crate::domain::distribution;
use crate::domain::ids::is_indicator;
use crate::domain::inflight::{self, HoldAction, HoldState};
use crate::domain::{Precision, TransactionRecord};
use crate::store::refusal_for;
use crate::LedgerError;
use bigdecimal::num_bigint::BigInt;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: &'static str,
    /// `insufficient_funds`, `overdraft_limit` or `other`.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BalancePreview {
    pub balance_id: String,
    pub role: &'static str,
    pub currency: String,
    /// An `@indicator` balance that does not exist yet.
    pub virtual_balance: bool,
    pub current: BalanceAmounts,
    pub resulting: BalanceAmounts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LegPreview {
    pub identifier: String,
    pub role: &'static str,
    pub precise_amount: BigInt,
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub would_apply: bool,
    pub rejection: Option<Rejection>,
    pub operation: &'static str,
    pub reference: String,
    pub currency: String,
    pub precise_amount: BigInt,
    pub amount: String,
    pub precision: Precision,
    pub balances: Vec<BalancePreview>,
    pub legs: Vec<LegPreview>,
    pub notes: Vec<String>,
    /// Per simulated row in order (per request item for transfers and bulk): `None` if it
    /// would apply, else why not.
    pub row_rejections: Vec<Option<Rejection>>,
}

fn rejection_of(error: &LedgerError) -> Rejection {
    let (code, reason) = match error {
        LedgerError::InsufficientFunds(_) => ("TXN_INSUFFICIENT_FUNDS", "insufficient_funds"),
        LedgerError::OverdraftLimitExceeded(_) => ("TXN_INSUFFICIENT_FUNDS", "overdraft_limit"),
        LedgerError::AlreadyCommitted(_) => ("TXN_ALREADY_COMMITTED", "other"),
        LedgerError::AlreadyVoided(_) => ("TXN_ALREADY_VOIDED", "other"),
        LedgerError::CommitAmountExceeded { .. } => ("TXN_COMMIT_AMOUNT_EXCEEDED", "other"),
        LedgerError::AlreadyRefunded(_) => ("GEN_CONFLICT", "other"),
        _ => ("TXN_VALIDATION_ERROR", "other"),
    };
    Rejection {
        code,
        reason,
        message: error.to_string(),
    }
}

/// A row and its changes, as the simulation sees them.
struct Simulated {
    record: TransactionRecord,
    changes: Vec<(String, GuardedChange)>,
    /// A split leg's own identifier and role, reported in `legs` (Blnk reports legs for
    /// splits only: for a sources split the leg is its source, else its destination).
    leg: Option<(String, &'static str)>,
}

impl Ledger {
    /// Simulates rows as one unit against the current balances.
    async fn simulate(
        &self,
        operation: &'static str,
        head: &TransactionRecord,
        rows: Vec<Simulated>,
        mode: UnitMode,
        virtual_ids: &[String],
        mut notes: Vec<String>,
    ) -> Result<Preview, LedgerError> {
        let ids: Vec<String> = rows
            .iter()
            .flat_map(|r| r.changes.iter().map(|(id, _)| id.clone()))
            .collect();
        let stored = self.store().balance_rows(ids.clone()).await?;
        let mut current: BTreeMap<String, (BalanceAmounts, String, bool)> = BTreeMap::new();
        for id in &ids {
            if let Some(row) = stored.get(id) {
                current.insert(
                    id.clone(),
                    (row.amounts.clone(), row.currency.clone(), false),
                );
            } else if virtual_ids.contains(id) {
                current.insert(
                    id.clone(),
                    (BalanceAmounts::default(), head.currency.clone(), true),
                );
            } else {
                return Err(LedgerError::BalanceNotFound(id.clone()));
            }
        }
        let available: HashMap<String, BigInt> = current
            .iter()
            .map(|(id, (amounts, _, _))| (id.clone(), amounts.available()))
            .collect();
        let unit = Unit {
            mode,
            items: rows.iter().map(|r| r.changes.as_slice()).collect(),
        };
        let decided = admit_units(&available, &[unit], &[vec![false; rows.len()]]).remove(0);
        let mut resulting: BTreeMap<String, BalanceAmounts> = current
            .iter()
            .map(|(id, (amounts, _, _))| (id.clone(), amounts.clone()))
            .collect();
        let mut rejection = None;
        let mut row_rejections = Vec::with_capacity(rows.len());
        for (row, admission) in rows.iter().zip(&decided) {
            row_rejections.push(match admission {
                Admission::Admitted => {
                    for (id, change) in &row.changes {
                        if let Some(amounts) = resulting.get_mut(id) {
                            amounts.apply(&change.delta);
                        }
                    }
                    None
                }
                Admission::Refused { change } => {
                    let (id, change) = &row.changes[*change];
                    let refused = rejection_of(&refusal_for(id, change.floor.as_ref()));
                    rejection.get_or_insert_with(|| refused.clone());
                    Some(refused)
                }
                Admission::RefusedWithUnit | Admission::Excluded => {
                    Some(rejection_of(&LedgerError::UnitRefused(
                        "another transaction of the batch was refused".into(),
                    )))
                }
            });
        }
        for (record, currency) in rows.iter().map(|r| (&r.record, &r.record.currency)) {
            if let Some((_, balance_currency, false)) = current.get(&record.source) {
                if balance_currency != currency {
                    notes.push(format!(
                        "currency {currency} differs from balance {}'s {balance_currency}",
                        record.source
                    ));
                }
            }
        }
        let role_of = |id: &str| {
            if rows.iter().any(|r| r.record.source == id) {
                "source"
            } else {
                "destination"
            }
        };
        let balances = current
            .into_iter()
            .map(
                |(id, (amounts, currency, virtual_balance))| BalancePreview {
                    role: role_of(&id),
                    resulting: resulting.remove(&id).unwrap_or_default(),
                    balance_id: id,
                    currency,
                    virtual_balance,
                    current: amounts,
                },
            )
            .collect();
        let legs = rows
            .iter()
            .filter_map(|r| {
                let (identifier, role) = r.leg.clone()?;
                Some(LegPreview {
                    identifier,
                    role,
                    precise_amount: r.record.precise_amount.clone(),
                    amount: r.record.amount_major(),
                })
            })
            .collect();
        Ok(Preview {
            would_apply: rejection.is_none(),
            rejection,
            operation,
            reference: head.reference.clone(),
            currency: head.currency.clone(),
            precise_amount: head.precise_amount.clone(),
            amount: head.amount_major(),
            precision: head.precision.clone(),
            balances,
            legs,
            notes,
            row_rejections,
        })
    }

    /// Resolves identifiers without creating anything; missing indicators become virtual.
    async fn resolve_for_preview(
        &self,
        identifier: &str,
        currency: &str,
        virtual_ids: &mut Vec<String>,
    ) -> Result<String, LedgerError> {
        if !is_indicator(identifier) {
            return Ok(identifier.to_owned());
        }
        match self.existing_indicator(identifier, currency).await? {
            Some(id) => Ok(id),
            None => {
                virtual_ids.push(identifier.to_owned());
                Ok(identifier.to_owned())
            }
        }
    }

    /// Dry run of `POST /transactions` (and of one bulk item).
    pub async fn preview_transfer(
        &self,
        request: &TransferRequest,
    ) -> Result<Preview, LedgerError> {
        let previews = self
            .preview_transfers(std::slice::from_ref(request), request.atomic, "create")
            .await?;
        Ok(previews)
    }

    /// Dry run of several transfers as one unit (a bulk request when `items.len() > 1`).
    pub async fn preview_transfers(
        &self,
        items: &[TransferRequest],
        atomic: bool,
        operation: &'static str,
    ) -> Result<Preview, LedgerError> {
        let mut virtual_ids = Vec::new();
        let mut rows = Vec::new();
        let mut item_of_row = Vec::new();
        for (item_index, request) in items.iter().enumerate() {
            type Pair = (String, String, BigInt, Option<(String, &'static str)>);
            let pairs: Vec<Pair> = match &request.legs {
                Legs::Single {
                    source,
                    destination,
                } => {
                    vec![(
                        source.clone(),
                        destination.clone(),
                        request.amount.as_bigint().clone(),
                        None,
                    )]
                }
                Legs::Split { side, other, legs } => {
                    let shares: Vec<_> = legs.iter().map(|l| l.share.clone()).collect();
                    let amounts = distribution::split(request.amount.as_bigint(), &shares)?;
                    legs.iter()
                        .zip(amounts)
                        .map(|(leg, amount)| {
                            let id = leg.identifier.clone();
                            match side {
                                super::Side::Sources => {
                                    (id.clone(), other.clone(), amount, Some((id, "source")))
                                }
                                super::Side::Destinations => {
                                    (other.clone(), id.clone(), amount, Some((id, "destination")))
                                }
                            }
                        })
                        .collect()
                }
            };
            for (source, destination, amount, leg) in pairs {
                if source == destination {
                    return Err(LedgerError::SameSourceAndDestination);
                }
                let source = self
                    .resolve_for_preview(&source, &request.currency, &mut virtual_ids)
                    .await?;
                let destination = self
                    .resolve_for_preview(&destination, &request.currency, &mut virtual_ids)
                    .await?;
                let mut preview_request = request.clone();
                preview_request.skip_queue = true;
                preview_request.scheduled_for = None;
                let record = preview_request.record(
                    String::new(),
                    request.reference.clone(),
                    source,
                    destination,
                    &amount,
                );
                let changes = record_changes(&record);
                rows.push(Simulated {
                    record,
                    changes,
                    leg,
                });
                item_of_row.push(item_index);
            }
        }
        let head = rows
            .first()
            .map(|r| r.record.clone())
            .ok_or(LedgerError::BulkEmpty)?;
        let mut head = head;
        if let Some(first) = items.first() {
            head.precise_amount = first.amount.as_bigint().clone();
        }
        let mode = if atomic {
            UnitMode::Atomic
        } else {
            UnitMode::Independent
        };
        let mut preview = self
            .simulate(operation, &head, rows, mode, &virtual_ids, Vec::new())
            .await?;
        // Per request item: it would apply if all its rows would.
        let mut per_item: Vec<Option<Rejection>> = vec![None; items.len()];
        for (item, rejection) in item_of_row.iter().zip(&preview.row_rejections) {
            if per_item[*item].is_none() {
                per_item[*item] = rejection.clone();
            }
        }
        preview.row_rejections = per_item;
        Ok(preview)
    }

    /// Dry run of a refund.
    pub async fn preview_refund(&self, request: &RefundRequest) -> Result<Preview, LedgerError> {
        let original = self.refundable(&request.id).await?.remove(0);
        let mut preview_request = request.clone();
        preview_request.skip_queue = true;
        let row = Self::refund_row(&original, &preview_request);
        let mut notes = Vec::new();
        let reference = format!("{}_refund", original.transaction_id);
        if self
            .store()
            .transaction_by_reference(&reference)
            .await?
            .is_some()
        {
            notes.push(format!(
                "transaction {} has already been refunded",
                original.transaction_id
            ));
        }
        let changes = record_changes(&row);
        let mut preview = self
            .simulate(
                "refund",
                &row.clone(),
                vec![Simulated {
                    record: row,
                    changes,
                    leg: None,
                }],
                UnitMode::Independent,
                &[],
                notes,
            )
            .await?;
        if !preview.notes.is_empty() {
            preview.would_apply = false;
            preview.rejection = Some(rejection_of(&LedgerError::AlreadyRefunded(
                original.transaction_id,
            )));
        }
        Ok(preview)
    }

    /// Dry run of an inflight commit or void.
    pub async fn preview_hold_action(&self, command: &HoldCommand) -> Result<Preview, LedgerError> {
        let holds = self.store().holds_for(&command.id).await?;
        if holds.is_empty() {
            let row = self.store().transaction(&command.id).await?;
            return Err(LedgerError::NotInflight(row.transaction_id));
        }
        let mut rows = Vec::new();
        let mut rejection = None;
        let mut head = None;
        for hold in &holds {
            let record = self.store().transaction(&hold.hold_id).await?;
            let action = match (&command.action, &command.amount_major) {
                (HoldAction::Commit(None), Some(major)) => {
                    HoldAction::Commit(Some(record.precision.major_to_minor(major)?))
                }
                (action, _) => action.clone(),
            };
            let state = HoldState::parse(&hold.state).unwrap_or(HoldState::Voided);
            match inflight::decide(state, &hold.remaining.0, &action) {
                Ok(outcome) => {
                    let changes = inflight::action_changes(
                        &action,
                        &hold.source,
                        &hold.destination,
                        &outcome.amount,
                    );
                    let mut row = record.clone();
                    row.precise_amount = outcome.amount;
                    head.get_or_insert_with(|| row.clone());
                    let leg = (holds.len() > 1).then(|| (hold.hold_id.clone(), "source"));
                    rows.push(Simulated {
                        record: row,
                        changes,
                        leg,
                    });
                }
                Err(refusal) => {
                    head.get_or_insert_with(|| record.clone());
                    let error = LedgerError::hold_refused(&hold.hold_id, refusal);
                    rejection.get_or_insert(rejection_of(&error));
                }
            }
        }
        let head = head.expect("at least one hold");
        let operation = if matches!(command.action, HoldAction::Void) {
            "void"
        } else {
            "commit"
        };
        let mut preview = self
            .simulate(
                operation,
                &head,
                rows,
                UnitMode::Independent,
                &[],
                Vec::new(),
            )
            .await?;
        if let Some(rejection) = rejection {
            preview.would_apply = false;
            preview.rejection = Some(rejection);
        }
        Ok(preview)
    }
}
