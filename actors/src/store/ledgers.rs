use super::filter::{self, FieldKind, ListQuery};
use super::Store;
use crate::entity::ledger;
use crate::events::outbox::{self, NewEvent};
use crate::LedgerError;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, TransactionTrait};

pub struct NewLedger {
    pub ledger_id: String,
    pub name: String,
    pub meta_data: Option<serde_json::Value>,
}

pub(crate) const LEDGER_FIELDS: &[(&str, FieldKind)] = &[
    ("ledger_id", FieldKind::Text),
    ("name", FieldKind::Text),
    ("created_at", FieldKind::Time),
];

impl Store {
    /// Stores a new ledger (and, when the store writes events, its `ledger.created`, in the
    /// same transaction).
    pub async fn create_ledger(&self, new: NewLedger) -> Result<ledger::Model, LedgerError> {
        let events = self.events();
        self.run(|db| async move {
            let model = ledger::ActiveModel {
                ledger_id: Set(new.ledger_id),
                name: Set(new.name),
                created_at: Set(Utc::now()),
                meta_data: Set(new.meta_data),
            };
            let Some(events) = events else {
                return Ok(model.insert(&db).await?);
            };
            let txn = db.begin().await?;
            let stored = model.insert(&txn).await?;
            let event = NewEvent::of(
                "ledger.created",
                &stored.ledger_id,
                events.payloads.ledger(&stored),
            );
            outbox::insert(&txn, &events, &[event]).await?;
            txn.commit().await?;
            Ok(stored)
        })
        .await
    }

    pub async fn ledger(&self, ledger_id: &str) -> Result<ledger::Model, LedgerError> {
        let id = ledger_id.to_owned();
        self.run(|db| async move {
            ledger::Entity::find_by_id(id.clone())
                .one(&db)
                .await?
                .ok_or(LedgerError::LedgerNotFound(id))
        })
        .await
    }

    pub async fn rename_ledger(
        &self,
        ledger_id: &str,
        name: String,
    ) -> Result<ledger::Model, LedgerError> {
        let id = ledger_id.to_owned();
        self.run(|db| async move {
            let found = ledger::Entity::find_by_id(id.clone())
                .one(&db)
                .await?
                .ok_or(LedgerError::LedgerNotFound(id))?;
            let mut model: ledger::ActiveModel = found.into();
            model.name = Set(name);
            Ok(model.update(&db).await?)
        })
        .await
    }

    pub async fn list_ledgers(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<ledger::Model>, Option<u64>), LedgerError> {
        self.run(|db| async move {
            filter::run_list(&db, ledger::Entity::find(), LEDGER_FIELDS, &query).await
        })
        .await
    }
}
