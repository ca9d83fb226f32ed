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
    /// The row a refund of `id` reverses: `id` itself if APPLIED or VOID, else its first
    /// APPLIED or VOID child (the worker's row of a queued transaction).
    pub(crate) async fn refundable(&self, id: &str) -> Result<TransactionRecord, LedgerError> {
        let row = self.store().transaction(id).await?;
        if matches!(
            row.status,
            TransactionStatus::Applied | TransactionStatus::Void
        ) {
            return Ok(row);
        }
        let children = self.store().children_of(id).await?;
        children
            .into_iter()
            .find(|c| {
                matches!(
                    c.status,
                    TransactionStatus::Applied | TransactionStatus::Void
                )
            })
            .ok_or(LedgerError::NotRefundable {
                id: id.to_owned(),
                status: row.status.to_string(),
            })
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

    /// `POST /refund-transaction/:id`.
    pub async fn refund(&self, request: RefundRequest) -> Result<TransactionRecord, LedgerError> {
        let ledger = self.clone();
        self.detached(async move {
            let original = ledger.refundable(&request.id).await?;
            let row = Self::refund_row(&original, &request);
            let outcomes = if request.skip_queue {
                ledger
                    .apply_records(vec![row], UnitMode::Independent, Refusal::Fail)
                    .await?
            } else {
                ledger
                    .store_queued(vec![row], UnitMode::Independent, false)
                    .await?
            };
            match outcomes.into_iter().next() {
                Some(ItemOutcome::Stored(record)) => Ok(record),
                Some(ItemOutcome::Refused(LedgerError::DuplicateReference(_))) => {
                    Err(LedgerError::AlreadyRefunded(original.transaction_id))
                }
                Some(ItemOutcome::Refused(error)) => Err(error),
                None => Err(LedgerError::Internal("empty refund".into())),
            }
        })
        .await
    }
}
