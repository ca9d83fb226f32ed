use super::filter::{self, FieldKind, ListQuery};
use super::Store;
use crate::domain::ids::{self, GENERAL_LEDGER_ID};
use crate::domain::{BalanceAmounts, Precision};
use crate::entity::{balance, ledger, Money};
use crate::events::outbox::{self, NewEvent};
use crate::LedgerError;
use bigdecimal::num_bigint::BigInt;
use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, Statement, TransactionTrait,
};
use std::collections::HashMap;

/// A balance's current state as the actors and the committer see it.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceRow {
    pub balance_id: String,
    pub currency: String,
    pub precision: Option<Precision>,
    pub amounts: BalanceAmounts,
    pub version: i64,
}

impl BalanceRow {
    /// The row a balance has when it was just inserted with only its key columns (an
    /// indicator balance's first use): nothing else needs reading back.
    pub fn created(balance_id: String, currency: String) -> Self {
        Self {
            balance_id,
            currency,
            precision: None,
            amounts: BalanceAmounts::default(),
            version: 0,
        }
    }
}

/// What a commit changes of a balance: its amounts, at a version. Its currency and
/// precision never change, so a group commit reads back only this.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceState {
    pub balance_id: String,
    pub amounts: BalanceAmounts,
    pub version: i64,
}

impl From<BalanceRow> for BalanceState {
    fn from(row: BalanceRow) -> Self {
        Self {
            balance_id: row.balance_id,
            amounts: row.amounts,
            version: row.version,
        }
    }
}

impl From<&balance::Model> for BalanceRow {
    fn from(model: &balance::Model) -> Self {
        Self {
            balance_id: model.balance_id.clone(),
            currency: model.currency.clone(),
            precision: model
                .precision
                .clone()
                .and_then(|p| Precision::from_bigint(p.0).ok()),
            amounts: BalanceAmounts {
                credit: model.credit_balance.0.clone(),
                debit: model.debit_balance.0.clone(),
                inflight_credit: model.inflight_credit_balance.0.clone(),
                inflight_debit: model.inflight_debit_balance.0.clone(),
            },
            version: model.version,
        }
    }
}

pub struct NewBalance {
    pub ledger_id: String,
    pub currency: String,
    pub identity_id: Option<String>,
    pub indicator: Option<String>,
    pub precision: Option<Precision>,
    pub meta_data: Option<serde_json::Value>,
    pub track_fund_lineage: bool,
    pub allocation_strategy: Option<String>,
}

/// Sums of still-QUEUED transactions of a balance (`with_queued=true`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueuedTotals {
    pub debit: BigInt,
    pub credit: BigInt,
}

pub(crate) const BALANCE_FIELDS: &[(&str, FieldKind)] = &[
    ("balance_id", FieldKind::Text),
    ("ledger_id", FieldKind::Text),
    ("identity_id", FieldKind::Text),
    ("indicator", FieldKind::Text),
    ("currency", FieldKind::Text),
    ("balance", FieldKind::Money),
    ("credit_balance", FieldKind::Money),
    ("debit_balance", FieldKind::Money),
    ("inflight_balance", FieldKind::Money),
    ("inflight_credit_balance", FieldKind::Money),
    ("inflight_debit_balance", FieldKind::Money),
    ("created_at", FieldKind::Time),
];

/// The balance of an `(indicator, currency)` key, and whether this call created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicatorBalance {
    pub balance_id: String,
    /// Inserted by this call with the id it proposed: its row is [`BalanceRow::created`].
    pub created: bool,
}

/// An `@indicator` balance that a queued request creates in the commit that stores it (no
/// commit of its own first): its key and the id proposed for it. Where another writer created
/// the key first, the commit writes the request against that balance instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIndicator {
    pub indicator: String,
    pub currency: String,
    pub balance_id: String,
}

/// Every key's balance; `proposed[i]` is the id offered for `keys[i]` (the stored id is the
/// proposed one exactly when this call's insert won).
fn complete(
    mut found: HashMap<(String, String), String>,
    keys: &[(String, String)],
    proposed: &[String],
) -> Result<HashMap<(String, String), IndicatorBalance>, LedgerError> {
    let mut answer = HashMap::with_capacity(keys.len());
    for (key, proposed) in keys.iter().zip(proposed) {
        let balance_id = found.remove(key).ok_or_else(|| {
            LedgerError::Internal(format!("indicator balance {} ({}) vanished", key.0, key.1))
        })?;
        let created = balance_id == *proposed;
        answer.insert(
            key.clone(),
            IndicatorBalance {
                balance_id,
                created,
            },
        );
    }
    Ok(answer)
}

/// `(indicator, currency) → balance id` of the stored indicator balances among `keys`.
async fn indicator_ids<C: ConnectionTrait>(
    db: &C,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), String>, sea_orm::DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        return super::pg_arrays::indicator_ids(db, keys).await;
    }
    let mut found = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(INDICATOR_INSERT_ROWS_MAX) {
        let mut wanted = Condition::any();
        for (indicator, currency) in chunk {
            wanted = wanted.add(
                Condition::all()
                    .add(balance::Column::Indicator.eq(indicator.clone()))
                    .add(balance::Column::Currency.eq(currency.clone())),
            );
        }
        let rows: Vec<(String, Option<String>, String)> = balance::Entity::find()
            .select_only()
            .column(balance::Column::BalanceId)
            .column(balance::Column::Indicator)
            .column(balance::Column::Currency)
            .filter(wanted)
            .into_tuple()
            .all(db)
            .await?;
        for (balance_id, indicator, currency) in rows {
            if let Some(indicator) = indicator {
                found.insert((indicator, currency), balance_id);
            }
        }
    }
    Ok(found)
}

/// Creates the indicator balances of `keys` that do not exist yet, `proposed[i]` being the id
/// offered for `keys[i]`, and returns every key's balance id (the proposed one exactly when
/// this call's insert won). Runs on `db` as it is: inside the caller's transaction, if any.
pub(crate) async fn create_indicator_balances<C: ConnectionTrait>(
    db: &C,
    keys: &[(String, String)],
    proposed: &[String],
) -> Result<HashMap<(String, String), String>, sea_orm::DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        let found = super::pg_arrays::create_indicators(db, keys, proposed).await?;
        if found.len() < keys.len() {
            // Created by another writer after this statement's snapshot was taken: committed
            // by now (the conflict waited for it), so visible to a new statement.
            return indicator_ids(db, keys).await;
        }
        return Ok(found);
    }
    let models: Vec<balance::ActiveModel> = keys
        .iter()
        .zip(proposed)
        .map(|((indicator, currency), id)| {
            let mut model = new_model(NewBalance {
                ledger_id: GENERAL_LEDGER_ID.to_owned(),
                currency: currency.clone(),
                identity_id: None,
                indicator: Some(indicator.clone()),
                precision: None,
                meta_data: None,
                track_fund_lineage: false,
                allocation_strategy: None,
            });
            model.balance_id = Set(id.clone());
            model
        })
        .collect();
    for chunk in models.chunks(INDICATOR_INSERT_ROWS_MAX) {
        balance::Entity::insert_many(chunk.to_vec())
            .on_conflict_do_nothing_on([balance::Column::Indicator, balance::Column::Currency])
            .exec_without_returning(db)
            .await?;
    }
    indicator_ids(db, keys).await
}

/// Current rows of several balances, keyed by id (a missing balance is left out).
pub(crate) async fn balance_rows<C: ConnectionTrait>(
    db: &C,
    balance_ids: &[String],
) -> Result<HashMap<String, BalanceRow>, sea_orm::DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        return super::pg_arrays::balance_rows(db, balance_ids).await;
    }
    let mut rows = HashMap::with_capacity(balance_ids.len());
    for chunk in balance_ids.chunks(INDICATOR_INSERT_ROWS_MAX) {
        let models = balance::Entity::find()
            .filter(balance::Column::BalanceId.is_in(chunk.iter().cloned()))
            .all(db)
            .await?;
        rows.extend(
            models
                .iter()
                .map(|m| (m.balance_id.clone(), BalanceRow::from(m))),
        );
    }
    Ok(rows)
}

/// Indicator balances per INSERT and per lookup (19 columns a row: well under the bind limits).
const INDICATOR_INSERT_ROWS_MAX: usize = 500;

fn new_model(new: NewBalance) -> balance::ActiveModel {
    let zero = || Set(Money::default());
    balance::ActiveModel {
        balance_id: Set(ids::new_id(ids::BALANCE_PREFIX)),
        ledger_id: Set(new.ledger_id),
        identity_id: Set(new.identity_id),
        indicator: Set(new.indicator),
        currency: Set(new.currency),
        precision: Set(new.precision.map(|p| Money(p.as_bigint().clone()))),
        balance: zero(),
        credit_balance: zero(),
        debit_balance: zero(),
        inflight_balance: zero(),
        inflight_credit_balance: zero(),
        inflight_debit_balance: zero(),
        version: Set(0),
        created_at: Set(Utc::now()),
        inflight_expires_at: Set(None),
        meta_data: Set(new.meta_data),
        track_fund_lineage: Set(new.track_fund_lineage),
        allocation_strategy: Set(new.allocation_strategy),
    }
}

async fn find_balance<C: ConnectionTrait>(db: &C, id: &str) -> Result<balance::Model, LedgerError> {
    balance::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| LedgerError::BalanceNotFound(id.to_owned()))
}

async fn find_by_indicator<C: ConnectionTrait>(
    db: &C,
    indicator: &str,
    currency: &str,
) -> Result<Option<balance::Model>, LedgerError> {
    Ok(balance::Entity::find()
        .filter(balance::Column::Indicator.eq(indicator))
        .filter(balance::Column::Currency.eq(currency))
        .one(db)
        .await?)
}

/// Inserts a new balance and returns its id. A concurrent creation of the same indicator
/// balance may win between a caller's check and this insert: the unique index decides, and
/// the loser gets the 409.
pub(crate) async fn insert_balance<C: ConnectionTrait>(
    db: &C,
    new: NewBalance,
) -> Result<String, LedgerError> {
    let (indicator, currency) = (new.indicator.clone(), new.currency.clone());
    let model = new_model(new);
    let id = model.balance_id.clone().unwrap();
    let inserted = balance::Entity::insert(model)
        .on_conflict_do_nothing_on([balance::Column::Indicator, balance::Column::Currency])
        .exec_without_returning(db)
        .await?;
    if !matches!(inserted, sea_orm::TryInsertResult::Inserted(rows) if rows > 0) {
        return Err(LedgerError::DuplicateBalance {
            indicator: indicator.unwrap_or_default(),
            currency,
        });
    }
    Ok(id)
}

impl Store {
    /// Stores a new balance. Its identity is checked in the transaction that stores it (see
    /// `identities::identity_exists`): a concurrent delete of that identity never leaves the
    /// balance linked to nothing.
    pub async fn create_balance(&self, new: NewBalance) -> Result<balance::Model, LedgerError> {
        let events = self.events();
        self.run(|db| async move {
            let txn = db.begin().await?;
            let ledger_id = new.ledger_id.clone();
            if ledger::Entity::find_by_id(ledger_id.clone())
                .one(&txn)
                .await?
                .is_none()
            {
                return Err(LedgerError::BalanceValidation(format!(
                    "Invalid ledger ID: ledger '{ledger_id}' does not exist"
                )));
            }
            if let Some(identity_id) = &new.identity_id {
                if !super::identities::identity_exists(&txn, identity_id).await? {
                    return Err(LedgerError::BalanceValidation(format!(
                        "Invalid identity ID: identity '{identity_id}' does not exist"
                    )));
                }
            }
            let duplicate = match &new.indicator {
                Some(indicator) => find_by_indicator(&txn, indicator, &new.currency).await?,
                None => None,
            };
            if let Some(existing) = duplicate {
                return Err(LedgerError::DuplicateBalance {
                    indicator: existing.indicator.unwrap_or_default(),
                    currency: existing.currency,
                });
            }
            let id = insert_balance(&txn, new).await?;
            let stored = find_balance(&txn, &id).await?;
            if let Some(events) = events {
                let event = NewEvent::of(
                    "balance.created",
                    &stored.balance_id,
                    events.payloads.balance(&stored),
                );
                outbox::insert(&txn, &events, &[event]).await?;
            }
            txn.commit().await?;
            Ok(stored)
        })
        .await
    }

    /// Links a balance to another identity (`PUT /balances/{id}/identity`).
    pub async fn relink_balance_identity(
        &self,
        balance_id: &str,
        identity_id: &str,
    ) -> Result<(), LedgerError> {
        let (balance_id, identity_id) = (balance_id.to_owned(), identity_id.to_owned());
        self.run(|db| async move {
            let txn = db.begin().await?;
            if !super::identities::identity_exists(&txn, &identity_id).await? {
                return Err(LedgerError::IdentityNotFound(identity_id));
            }
            let updated = balance::Entity::update_many()
                .col_expr(
                    balance::Column::IdentityId,
                    sea_orm::sea_query::Expr::val(identity_id),
                )
                .filter(balance::Column::BalanceId.eq(balance_id.clone()))
                .exec(&txn)
                .await?;
            if updated.rows_affected == 0 {
                return Err(LedgerError::BalanceNotFound(balance_id));
            }
            txn.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn balance(&self, balance_id: &str) -> Result<balance::Model, LedgerError> {
        let id = balance_id.to_owned();
        self.run(|db| async move { find_balance(&db, &id).await })
            .await
    }

    pub async fn balance_by_indicator(
        &self,
        indicator: &str,
        currency: &str,
    ) -> Result<balance::Model, LedgerError> {
        let (indicator, currency) = (indicator.to_owned(), currency.to_owned());
        self.run(|db| async move {
            find_by_indicator(&db, &indicator, &currency).await?.ok_or(
                LedgerError::BalanceNotFound(format!("{indicator} ({currency})")),
            )
        })
        .await
    }

    /// The General Ledger balances of `(indicator, currency)` keys, each created on first
    /// use, all in one transaction (one commit for a whole batch of first uses). Safe under
    /// concurrent first uses, across processes too: the unique index decides, and every key
    /// is read back after the insert.
    pub async fn indicator_balances(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<HashMap<(String, String), IndicatorBalance>, LedgerError> {
        let events = self.events();
        self.run(|db| async move {
            let proposed: Vec<String> = keys
                .iter()
                .map(|_| ids::new_id(ids::BALANCE_PREFIX))
                .collect();
            let found = if let Some(events) = &events {
                // With the `balance.created` of the balances made, in the same transaction.
                let txn = db.begin().await?;
                let found = create_indicator_balances(&txn, &keys, &proposed).await?;
                let created: Vec<String> = keys
                    .iter()
                    .zip(&proposed)
                    .filter(|(key, id)| found.get(*key) == Some(*id))
                    .map(|(_, id)| id.clone())
                    .collect();
                if !created.is_empty() {
                    let written =
                        super::commit::created_indicator_events(&txn, &created, &*events.payloads)
                            .await?;
                    outbox::insert(&txn, events, &written).await?;
                }
                txn.commit().await?;
                found
            } else if db.get_database_backend() == DbBackend::Postgres {
                // One statement, its own transaction (and, where another writer won the
                // insert race, one read after it).
                create_indicator_balances(&db, &keys, &proposed).await?
            } else {
                let txn = db.begin().await?;
                let found = create_indicator_balances(&txn, &keys, &proposed).await?;
                txn.commit().await?;
                found
            };
            complete(found, &keys, &proposed)
        })
        .await
    }

    /// Current rows of several balances, keyed by id.
    pub async fn balance_rows(
        &self,
        balance_ids: Vec<String>,
    ) -> Result<HashMap<String, BalanceRow>, LedgerError> {
        self.run(|db| async move { Ok(balance_rows(&db, &balance_ids).await?) })
            .await
    }

    pub async fn list_balances(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<balance::Model>, Option<u64>), LedgerError> {
        self.run(|db| async move {
            filter::run_list(&db, balance::Entity::find(), BALANCE_FIELDS, &query).await
        })
        .await
    }

    /// Sums of QUEUED transactions that no worker has applied yet.
    pub async fn queued_totals(&self, balance_id: &str) -> Result<QueuedTotals, LedgerError> {
        let id = balance_id.to_owned();
        self.run(|db| async move {
            let backend = db.get_database_backend();
            let placeholder = |n: usize| match backend {
                DbBackend::Sqlite => "?".to_owned(),
                _ => format!("${n}"),
            };
            // Amounts are summed here, not in SQL: SQLite cannot add TEXT money exactly.
            let sql = format!(
                "SELECT q.source, q.destination, q.precise_amount FROM transactions q \
                 WHERE q.status = 'QUEUED' AND (q.source = {p1} OR q.destination = {p2}) \
                 AND NOT EXISTS (SELECT 1 FROM transactions c WHERE c.parent_transaction = q.transaction_id)",
                p1 = placeholder(1),
                p2 = placeholder(2)
            );
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(backend, sql, [id.clone().into(), id.clone().into()]))
                .await?;
            let mut totals = QueuedTotals::default();
            for row in rows {
                let source: String = row.try_get("", "source")?;
                let amount: Money = row.try_get("", "precise_amount")?;
                if source == id {
                    totals.debit += amount.0;
                } else {
                    totals.credit += amount.0;
                }
            }
            Ok(totals)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(indicator: &str) -> (String, String) {
        (indicator.to_owned(), "USD".to_owned())
    }

    #[test]
    fn a_key_is_created_here_only_when_its_stored_id_is_the_proposed_one() {
        let keys = [key("@new"), key("@old")];
        let proposed = ["bln_a".to_owned(), "bln_b".to_owned()];
        let found = HashMap::from([
            (key("@new"), "bln_a".to_owned()),
            (key("@old"), "bln_stored_before".to_owned()),
        ]);
        let answer = complete(found, &keys, &proposed).unwrap();
        assert!(answer[&key("@new")].created);
        assert_eq!(answer[&key("@old")].balance_id, "bln_stored_before");
        assert!(!answer[&key("@old")].created);
    }

    #[test]
    fn a_key_missing_from_what_was_found_is_an_error_not_a_panic() {
        let keys = [key("@gone")];
        let answer = complete(HashMap::new(), &keys, &["bln_a".to_owned()]);
        assert!(matches!(answer, Err(LedgerError::Internal(_))));
    }
}
