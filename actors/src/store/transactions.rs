use super::filter::{self, FieldKind, ListQuery};
use super::Store;
use crate::domain::{Precision, TransactionRecord, TransactionStatus};
use crate::entity::{transaction, Money};
use crate::LedgerError;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

pub(crate) const TRANSACTION_FIELDS: &[(&str, FieldKind)] = &[
    ("transaction_id", FieldKind::Text),
    ("parent_transaction", FieldKind::Text),
    ("amount", FieldKind::MajorAmount),
    ("precise_amount", FieldKind::Money),
    ("currency", FieldKind::Text),
    ("source", FieldKind::Text),
    ("destination", FieldKind::Text),
    ("balance_id", FieldKind::EitherBalance),
    ("reference", FieldKind::Text),
    ("status", FieldKind::Text),
    ("created_at", FieldKind::Time),
    ("effective_date", FieldKind::Time),
    ("scheduled_for", FieldKind::Time),
    ("description", FieldKind::Text),
    ("precision", FieldKind::Money),
];

impl TryFrom<transaction::Model> for TransactionRecord {
    type Error = LedgerError;
    fn try_from(model: transaction::Model) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| {
            LedgerError::Storage(format!(
                "transaction {} has a bad {what}",
                model.transaction_id
            ))
        };
        let status = model
            .status
            .parse::<TransactionStatus>()
            .map_err(|_| corrupt("status"))?;
        let precision =
            Precision::from_bigint(model.precision.0.clone()).map_err(|_| corrupt("precision"))?;
        Ok(Self {
            transaction_id: model.transaction_id,
            parent_transaction: model.parent_transaction,
            source: model.source,
            destination: model.destination,
            reference: model.reference,
            precise_amount: model.precise_amount.0,
            precision,
            currency: model.currency,
            description: model.description,
            status,
            hash: model.hash,
            allow_overdraft: model.allow_overdraft,
            overdraft_limit: model.overdraft_limit.map(|m| m.0),
            inflight: model.inflight,
            skip_queue: model.skip_queue,
            atomic: model.atomic,
            created_at: model.created_at,
            effective_date: model.effective_date,
            scheduled_for: model.scheduled_for,
            inflight_expiry_date: model.inflight_expiry_date,
            inflight_commit_date: model.inflight_commit_date,
            meta_data: model.meta_data,
        })
    }
}

pub(crate) fn active_model(record: &TransactionRecord) -> transaction::ActiveModel {
    transaction::ActiveModel {
        transaction_id: Set(record.transaction_id.clone()),
        parent_transaction: Set(record.parent_transaction.clone()),
        source: Set(record.source.clone()),
        destination: Set(record.destination.clone()),
        reference: Set(record.reference.clone()),
        precise_amount: Set(Money(record.precise_amount.clone())),
        precision: Set(Money(record.precision.as_bigint().clone())),
        currency: Set(record.currency.clone()),
        description: Set(record.description.clone()),
        status: Set(record.status.as_str().to_owned()),
        hash: Set(record.hash.clone()),
        allow_overdraft: Set(record.allow_overdraft),
        overdraft_limit: Set(record.overdraft_limit.clone().map(Money)),
        inflight: Set(record.inflight),
        skip_queue: Set(record.skip_queue),
        atomic: Set(record.atomic),
        created_at: Set(record.created_at),
        effective_date: Set(record.effective_date),
        scheduled_for: Set(record.scheduled_for),
        inflight_expiry_date: Set(record.inflight_expiry_date),
        inflight_commit_date: Set(record.inflight_commit_date),
        meta_data: Set(record.meta_data.clone()),
    }
}

async fn one_where(
    db: &DatabaseConnection,
    column: transaction::Column,
    value: String,
) -> Result<Option<TransactionRecord>, LedgerError> {
    transaction::Entity::find()
        .filter(column.eq(value))
        .one(db)
        .await?
        .map(TransactionRecord::try_from)
        .transpose()
}

impl Store {
    pub async fn transaction(&self, id: &str) -> Result<TransactionRecord, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move {
            one_where(&db, transaction::Column::TransactionId, id.clone())
                .await?
                .ok_or(LedgerError::TransactionNotFound(id))
        })
        .await
    }

    pub async fn transaction_by_reference(
        &self,
        reference: &str,
    ) -> Result<Option<TransactionRecord>, LedgerError> {
        let reference = reference.to_owned();
        self.run(
            |db| async move { one_where(&db, transaction::Column::Reference, reference).await },
        )
        .await
    }

    pub async fn list_transactions(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<TransactionRecord>, Option<u64>), LedgerError> {
        self.run(|db| async move {
            let (rows, total) =
                filter::run_list(&db, transaction::Entity::find(), TRANSACTION_FIELDS, &query)
                    .await?;
            let rows = rows
                .into_iter()
                .map(TransactionRecord::try_from)
                .collect::<Result<_, _>>()?;
            Ok((rows, total))
        })
        .await
    }

    /// QUEUED rows created before `older_than` (and not before `since`, when given) that no
    /// worker has finished (no child row), oldest first.
    pub async fn unfinished_queued(
        &self,
        older_than: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
        limit: u64,
    ) -> Result<Vec<TransactionRecord>, LedgerError> {
        self.run(move |db| async move {
            let mut select = waiting(TransactionStatus::Queued)
                .filter(transaction::Column::CreatedAt.lt(older_than));
            if let Some(since) = since {
                select = select.filter(transaction::Column::CreatedAt.gte(since));
            }
            records(
                &db,
                select
                    .order_by_asc(transaction::Column::CreatedAt)
                    .limit(limit),
            )
            .await
        })
        .await
    }
}

impl Store {
    /// The rows with these ids (missing ids are simply absent).
    pub async fn transactions_by_ids(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<TransactionRecord>, LedgerError> {
        self.run(|db| async move {
            if db.get_database_backend() == sea_orm::DbBackend::Postgres {
                return super::pg_arrays::transactions_by_ids(&db, &ids)
                    .await?
                    .into_iter()
                    .map(TransactionRecord::try_from)
                    .collect();
            }
            let mut records = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(1000) {
                let select = transaction::Entity::find()
                    .filter(transaction::Column::TransactionId.is_in(chunk.to_vec()));
                records.extend(self::records(&db, select).await?);
            }
            Ok(records)
        })
        .await
    }
}

impl Store {
    /// The QUEUED rows of an atomic group (split or bulk) that no worker has finished.
    pub async fn unfinished_group(
        &self,
        group: &str,
    ) -> Result<Vec<TransactionRecord>, LedgerError> {
        let group = group.to_owned();
        self.run(|db| async move {
            records(
                &db,
                waiting(TransactionStatus::Queued)
                    .filter(transaction::Column::ParentTransaction.eq(group))
                    .order_by_asc(transaction::Column::CreatedAt)
                    .order_by_asc(transaction::Column::Reference)
                    .limit(20_000),
            )
            .await
        })
        .await
    }

    /// SCHEDULED rows whose time has come and that no worker has applied.
    pub async fn due_scheduled(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<TransactionRecord>, LedgerError> {
        self.run(move |db| async move {
            records(
                &db,
                waiting(TransactionStatus::Scheduled)
                    .filter(transaction::Column::ScheduledFor.lte(now))
                    .order_by_asc(transaction::Column::ScheduledFor)
                    .limit(limit),
            )
            .await
        })
        .await
    }
}

impl Store {
    /// Rows whose parent is `id`, oldest first.
    pub async fn children_of(&self, id: &str) -> Result<Vec<TransactionRecord>, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move {
            records(
                &db,
                transaction::Entity::find()
                    .filter(transaction::Column::ParentTransaction.eq(id))
                    .order_by_asc(transaction::Column::CreatedAt)
                    .limit(10_000),
            )
            .await
        })
        .await
    }
}

/// Rows in `status` that no worker has finished yet (no row names them as parent).
fn waiting(status: TransactionStatus) -> sea_orm::Select<transaction::Entity> {
    transaction::Entity::find()
        .filter(transaction::Column::Status.eq(status.as_str()))
        .filter(without_child())
}

/// No row names this row as its parent: no worker (or action) has finished it yet.
fn without_child() -> sea_orm::sea_query::Expr {
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    let children = Query::select()
        .expr(Expr::cust("1"))
        .from_as(transaction::Entity, "c")
        .and_where(Expr::cust(
            "c.parent_transaction = transactions.transaction_id",
        ))
        .to_owned();
    Expr::exists(children).not()
}

/// Runs a select of transaction rows and converts them to records.
async fn records(
    db: &DatabaseConnection,
    select: sea_orm::Select<transaction::Entity>,
) -> Result<Vec<TransactionRecord>, LedgerError> {
    select
        .all(db)
        .await?
        .into_iter()
        .map(TransactionRecord::try_from)
        .collect()
}
