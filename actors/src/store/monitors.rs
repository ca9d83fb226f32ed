//! Balance monitors: create, read, list (all or by balance), replace, delete.

use super::changes::{self, Change};
use super::filter::{self, FieldKind, ListQuery};
use super::Store;
use crate::domain::monitor::MonitorCondition;
use crate::entity::{balance, balance_monitor, Money};
use crate::LedgerError;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
    TransactionTrait,
};

pub(crate) const MONITOR_FIELDS: &[(&str, FieldKind)] = &[
    ("monitor_id", FieldKind::Text),
    ("balance_id", FieldKind::Text),
    ("field", FieldKind::Text),
    ("operator", FieldKind::Text),
    ("created_at", FieldKind::Time),
];

/// A monitor as a client describes it.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    pub balance_id: String,
    pub condition: MonitorCondition,
    pub description: Option<String>,
    pub call_back_url: Option<String>,
    pub meta_data: Option<serde_json::Value>,
}

fn set_spec(model: &mut balance_monitor::ActiveModel, spec: MonitorSpec) {
    let condition = spec.condition;
    model.balance_id = Set(spec.balance_id);
    model.field = Set(condition.field.as_str().to_owned());
    model.operator = Set(condition.operator.as_str().to_owned());
    model.value = Set(condition.value);
    model.precision = Set(Money(condition.precision.as_bigint().clone()));
    model.precise_value = Set(Money(condition.precise_value));
    model.description = Set(spec.description);
    model.call_back_url = Set(spec.call_back_url);
    model.meta_data = Set(spec.meta_data);
}

async fn balance_must_exist(db: &DatabaseConnection, id: &str) -> Result<(), LedgerError> {
    match balance::Entity::find_by_id(id.to_owned()).one(db).await? {
        Some(_) => Ok(()),
        None => Err(LedgerError::BalanceNotFound(id.to_owned())),
    }
}

impl Store {
    pub async fn create_monitor(
        &self,
        monitor_id: String,
        spec: MonitorSpec,
    ) -> Result<balance_monitor::Model, LedgerError> {
        let events = self.events();
        self.run(|db| async move {
            balance_must_exist(&db, &spec.balance_id).await?;
            let txn = db.begin().await?;
            let mut model = balance_monitor::ActiveModel {
                monitor_id: Set(monitor_id),
                created_at: Set(Utc::now()),
                ..Default::default()
            };
            set_spec(&mut model, spec);
            let stored = model.insert(&txn).await?;
            changes::record(&txn, events.as_deref(), Change::MonitorCreated(&stored)).await?;
            txn.commit().await?;
            Ok(stored)
        })
        .await
    }

    pub async fn monitor(&self, id: &str) -> Result<balance_monitor::Model, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move {
            balance_monitor::Entity::find_by_id(id.clone())
                .one(&db)
                .await?
                .ok_or(LedgerError::MonitorNotFound(id))
        })
        .await
    }

    /// Monitors, newest first; `query` may restrict them to one balance.
    pub async fn list_monitors(
        &self,
        query: ListQuery,
    ) -> Result<Vec<balance_monitor::Model>, LedgerError> {
        self.run(|db| async move {
            let (rows, _) =
                filter::run_list(&db, balance_monitor::Entity::find(), MONITOR_FIELDS, &query)
                    .await?;
            Ok(rows)
        })
        .await
    }

    /// Replaces a monitor's balance, condition, description and callback (`PUT`).
    pub async fn replace_monitor(
        &self,
        id: &str,
        spec: MonitorSpec,
    ) -> Result<balance_monitor::Model, LedgerError> {
        let id = id.to_owned();
        let events = self.events();
        self.run(|db| async move {
            balance_must_exist(&db, &spec.balance_id).await?;
            let txn = db.begin().await?;
            let stored = balance_monitor::Entity::find_by_id(id.clone())
                .one(&txn)
                .await?
                .ok_or(LedgerError::MonitorNotFound(id))?;
            let mut model: balance_monitor::ActiveModel = stored.into();
            set_spec(&mut model, spec);
            let updated = model.update(&txn).await?;
            // A new condition (or balance) is evaluated afresh.
            crate::events::monitors::forget_state(&txn, &updated.monitor_id).await?;
            changes::record(&txn, events.as_deref(), Change::MonitorUpdated(&updated)).await?;
            txn.commit().await?;
            Ok(updated)
        })
        .await
    }

    pub async fn delete_monitor(&self, id: &str) -> Result<(), LedgerError> {
        let id = id.to_owned();
        let events = self.events();
        self.run(|db| async move {
            let txn = db.begin().await?;
            let deleted = balance_monitor::Entity::delete_many()
                .filter(balance_monitor::Column::MonitorId.eq(id.clone()))
                .exec(&txn)
                .await?;
            if deleted.rows_affected == 0 {
                return Err(LedgerError::MonitorNotFound(id));
            }
            crate::events::monitors::forget_state(&txn, &id).await?;
            changes::record(&txn, events.as_deref(), Change::MonitorDeleted(&id)).await?;
            txn.commit().await?;
            Ok(())
        })
        .await
    }
}
