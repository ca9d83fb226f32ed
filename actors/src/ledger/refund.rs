//! Refunds: the reverse of an applied transaction, at most once (the refund's reference is
//! unique). Refunding a VOID re-creates the hold it voided, in its original direction.

use super::Ledger;
use crate::domain::batch::UnitMode;
use crate::domain::ids;
use crate::domain::transaction::{QUEUED_PARENT_KEY, REJECTION_REASON_KEY};
use crate::domain::{TransactionRecord, TransactionStatus};
use crate::store::{ItemOutcome, Refusal};
use crate::LedgerError;
use chrono::Utc;

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub id: String,
    pub description: Option<String>,
    pub meta_data: Option<serde_json::Value>,
    pub skip_queue: bool,
}

impl Ledger {
    /// The rows a refund of `id` reverses: `id` itself if APPLIED or VOID; else its APPLIED
    /// or VOID children (the worker's row of a queued transaction, the legs of a split or a
    /// bulk batch), looking one level further below queued legs.
    pub(crate) async fn refundable(&self, id: &str) -> Result<Vec<TransactionRecord>, LedgerError> {
        let refundable = |r: &TransactionRecord| {
            matches!(
                r.status,
                TransactionStatus::Applied | TransactionStatus::Void
            )
        };
        let row = match self.store().transaction(id).await {
            Ok(row) if refundable(&row) => return Ok(vec![row]),
            Ok(row) => Some(row),
            Err(LedgerError::TransactionNotFound(_)) => None,
            Err(error) => return Err(error),
        };
        let mut found = Vec::new();
        for child in self.store().children_of(id).await? {
            if refundable(&child) {
                found.push(child);
            } else if child.status == TransactionStatus::Queued {
                found.extend(
                    self.store()
                        .children_of(&child.transaction_id)
                        .await?
                        .into_iter()
                        .filter(refundable),
                );
            }
        }
        match (found.is_empty(), row) {
            (false, _) => Ok(found),
            (true, Some(row)) => Err(LedgerError::NotRefundable {
                id: id.to_owned(),
                status: row.status.to_string(),
            }),
            (true, None) => Err(LedgerError::TransactionNotFound(id.to_owned())),
        }
    }

    /// The refund row of `original` (not yet stored).
    pub(crate) fn refund_row(
        original: &TransactionRecord,
        request: &RefundRequest,
    ) -> TransactionRecord {
        let mut row = original.clone();
        let now = Utc::now();
        let voided = original.status == TransactionStatus::Void;
        row.transaction_id = ids::new_id(ids::TRANSACTION_PREFIX);
        row.parent_transaction = Some(original.transaction_id.clone());
        row.reference = format!("{}_refund", original.transaction_id);
        if !voided {
            std::mem::swap(&mut row.source, &mut row.destination);
        }
        row.allow_overdraft = true;
        row.atomic = false;
        row.overdraft_limit = None;
        row.inflight = voided;
        row.skip_queue = request.skip_queue;
        row.status = match (request.skip_queue, voided) {
            (false, _) => TransactionStatus::Queued,
            (true, true) => TransactionStatus::Inflight,
            (true, false) => TransactionStatus::Applied,
        };
        if let Some(description) = &request.description {
            row.description = Some(description.clone());
        }
        let mut meta = match &original.meta_data {
            Some(serde_json::Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        };
        meta.remove(QUEUED_PARENT_KEY);
        meta.remove(crate::store::GROUP_KEY);
        meta.remove(REJECTION_REASON_KEY);
        if let Some(serde_json::Value::Object(extra)) = &request.meta_data {
            meta.extend(extra.clone());
        }
        if row.status == TransactionStatus::Queued {
            meta.insert(QUEUED_PARENT_KEY.into(), row.transaction_id.clone().into());
        }
        row.meta_data = (!meta.is_empty()).then_some(serde_json::Value::Object(meta));
        row.created_at = now;
        row.effective_date = Some(now);
        row.scheduled_for = None;
        row.inflight_expiry_date = None;
        row.inflight_commit_date = None;
        row.hash = TransactionRecord::content_hash(
            &row.amount_major(),
            &row.reference,
            &row.currency,
            &row.source,
            &row.destination,
        );
        row
    }

    /// `POST /refund-transaction/:id`: refunds every refundable row under `id` together and
    /// answers with the first refund.
    pub async fn refund(&self, request: RefundRequest) -> Result<TransactionRecord, LedgerError> {
        let ledger = self.clone();
        self.detached(async move {
            let originals = ledger.refundable(&request.id).await?;
            let rows: Vec<TransactionRecord> = originals
                .iter()
                .map(|o| Self::refund_row(o, &request))
                .collect();
            let outcomes = if request.skip_queue {
                ledger
                    .apply_records(rows, UnitMode::Atomic, Refusal::Fail)
                    .await?
            } else {
                ledger
                    .store_queued(rows, UnitMode::Atomic, Default::default(), None)
                    .await?
            };
            let first_original = originals[0].transaction_id.clone();
            match outcomes.into_iter().next() {
                Some(ItemOutcome::Stored(record)) => Ok(record),
                Some(ItemOutcome::Refused(LedgerError::DuplicateReference(_))) => {
                    Err(LedgerError::AlreadyRefunded(first_original))
                }
                Some(ItemOutcome::Refused(error)) => Err(error),
                None => Err(LedgerError::Internal("empty refund".into())),
            }
        })
        .await
    }
}
