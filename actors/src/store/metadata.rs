//! `POST /{entity-id}/metadata`: a shallow merge of a client's keys into an entity's
//! `meta_data`, done by the database in one statement on PostgreSQL (`||`), so two
//! concurrent merges never lose each other's keys; SQLite, with its one writer, merges in a
//! transaction. For transactions the merge applies to the row and to every row whose
//! `parent_transaction` is that id (split legs, bulk legs, a queued row's child), in one
//! statement: the only change a transaction row ever takes (migration 10).
//!
//! Keys the server maintains are never taken from a client: an identity's tokenization
//! marks, and a transaction's queued-parent and group keys, which the workers read back.

use super::changes::{self, Change};
use super::Store;
use crate::domain::identity::{merge_meta, TOKENIZED_FIELDS_KEY};
use crate::domain::ids::MetadataTarget;
use crate::domain::transaction::QUEUED_PARENT_KEY;
use crate::entity::{balance, identity, ledger, transaction};
use crate::LedgerError;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QuerySelect, Statement, TransactionTrait,
};
use serde_json::{Map, Value};

/// Keys of an entity's `meta_data` that only the server writes.
fn protected_keys(target: MetadataTarget) -> &'static [&'static str] {
    match target {
        MetadataTarget::Identity => &[TOKENIZED_FIELDS_KEY],
        MetadataTarget::Transactions => &[QUEUED_PARENT_KEY, super::GROUP_KEY],
        MetadataTarget::Ledger | MetadataTarget::Balance => &[],
    }
}

/// `(table, key column)` of a merged entity.
fn table_of(target: MetadataTarget) -> (&'static str, &'static str) {
    match target {
        MetadataTarget::Ledger => ("ledgers", "ledger_id"),
        MetadataTarget::Balance => ("balances", "balance_id"),
        MetadataTarget::Identity => ("identities", "identity_id"),
        MetadataTarget::Transactions => ("transactions", "transaction_id"),
    }
}

/// `meta_data` as an object (anything else counts as empty, as Blnk's `jsonb_typeof` check).
const OBJECT_OR_EMPTY: &str =
    "COALESCE(CASE WHEN jsonb_typeof(meta_data) = 'object' THEN meta_data END, '{}'::jsonb)";

impl Store {
    /// Merges `update` into the entity's `meta_data`. Answers Blnk's `meta_data`: the merged
    /// object for ledgers, balances and identities, the request's own for transactions.
    pub async fn merge_metadata(
        &self,
        target: MetadataTarget,
        id: &str,
        update: Map<String, Value>,
    ) -> Result<Value, LedgerError> {
        let id = id.to_owned();
        let events = self.events();
        self.run(move |db| async move {
            let protected = protected_keys(target);
            let kept: Map<String, Value> = update
                .iter()
                .filter(|(key, _)| !protected.contains(&key.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let txn = db.begin().await?;
            let merged = if txn.get_database_backend() == DbBackend::Postgres {
                merge_on_postgres(&txn, target, &id, &kept).await?
            } else {
                merge_on_sqlite(&txn, target, &id, &kept).await?
            };
            let Some(merged) = merged else {
                return Err(LedgerError::EntityNotFound(id));
            };
            changes::record(&txn, events.as_deref(), Change::MetadataUpdated(&id)).await?;
            txn.commit().await?;
            Ok(match target {
                MetadataTarget::Transactions => Value::Object(update),
                _ => merged,
            })
        })
        .await
    }
}

/// One `UPDATE … SET meta_data = meta_data || $1`; `None` when no row has the id.
async fn merge_on_postgres(
    txn: &DatabaseTransaction,
    target: MetadataTarget,
    id: &str,
    update: &Map<String, Value>,
) -> Result<Option<Value>, LedgerError> {
    let (table, key) = table_of(target);
    let update = Value::Object(update.clone());
    if target == MetadataTarget::Transactions {
        let sql = format!(
            "UPDATE transactions SET meta_data = {OBJECT_OR_EMPTY} || $1::jsonb \
             WHERE transaction_id = $2 OR parent_transaction = $2"
        );
        let result = txn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [update.clone().into(), id.into()],
            ))
            .await?;
        return Ok((result.rows_affected() > 0).then_some(update));
    }
    let sql = format!(
        "UPDATE {table} SET meta_data = {OBJECT_OR_EMPTY} || $1::jsonb \
         WHERE {key} = $2 RETURNING meta_data"
    );
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [update.into(), id.into()],
        ))
        .await?;
    match row {
        Some(row) => Ok(Some(row.try_get::<Value>("", "meta_data")?)),
        None => Ok(None),
    }
}

/// Read, merge, write, inside the caller's transaction (SQLite has one writer).
async fn merge_on_sqlite(
    txn: &DatabaseTransaction,
    target: MetadataTarget,
    id: &str,
    update: &Map<String, Value>,
) -> Result<Option<Value>, LedgerError> {
    let merged_with = |current: Option<Value>| Some(merge_meta(current, update, &[]));
    match target {
        MetadataTarget::Ledger => {
            let Some(found) = ledger::Entity::find_by_id(id.to_owned()).one(txn).await? else {
                return Ok(None);
            };
            let merged = merged_with(found.meta_data.clone());
            let mut model: ledger::ActiveModel = found.into();
            model.meta_data = Set(merged.clone());
            sea_orm::ActiveModelTrait::update(model, txn).await?;
            Ok(merged)
        }
        MetadataTarget::Balance => {
            let Some(current) = balance::Entity::find_by_id(id.to_owned())
                .select_only()
                .column(balance::Column::MetaData)
                .into_tuple::<Option<Value>>()
                .one(txn)
                .await?
            else {
                return Ok(None);
            };
            // Only `meta_data`: the amounts belong to the group commit.
            let merged = merged_with(current);
            balance::Entity::update_many()
                .col_expr(
                    balance::Column::MetaData,
                    sea_orm::sea_query::Expr::val(merged.clone()),
                )
                .filter(balance::Column::BalanceId.eq(id))
                .exec(txn)
                .await?;
            Ok(merged)
        }
        MetadataTarget::Identity => {
            let Some(found) = identity::Entity::find_by_id(id.to_owned()).one(txn).await? else {
                return Ok(None);
            };
            let merged = merged_with(found.meta_data.clone());
            let mut model: identity::ActiveModel = found.into();
            model.meta_data = Set(merged.clone());
            sea_orm::ActiveModelTrait::update(model, txn).await?;
            Ok(merged)
        }
        MetadataTarget::Transactions => {
            let rows: Vec<(String, Option<Value>)> = transaction::Entity::find()
                .select_only()
                .column(transaction::Column::TransactionId)
                .column(transaction::Column::MetaData)
                .filter(
                    sea_orm::Condition::any()
                        .add(transaction::Column::TransactionId.eq(id))
                        .add(transaction::Column::ParentTransaction.eq(id)),
                )
                .into_tuple()
                .all(txn)
                .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            for (transaction_id, current) in rows {
                transaction::Entity::update_many()
                    .col_expr(
                        transaction::Column::MetaData,
                        sea_orm::sea_query::Expr::val(merged_with(current)),
                    )
                    .filter(transaction::Column::TransactionId.eq(transaction_id))
                    .exec(txn)
                    .await?;
            }
            Ok(Some(Value::Object(update.clone())))
        }
    }
}
