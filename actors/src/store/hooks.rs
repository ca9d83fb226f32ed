//! Transaction hooks (Blnk 1.9): create, read, list (all or one type), replace, delete, and
//! the deliveries' `last_run`/`last_success`. Every change also updates this process's
//! [`HookDirectory`] (the write path routes events by it); other processes see it at
//! their next refresh ([`Store::watch_hooks`]).
//!
//! Plain SQL on `transaction_hooks` (migration 14), the same on both backends.

use super::Store;
use crate::domain::hook::{Hook, HookSpec, HookType};
use crate::events::hooks::{HookDirectory, HOOK_SINK_PREFIX};
use crate::LedgerError;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, TransactionTrait, Value};
use std::sync::Arc;
use std::time::Duration;

/// Hooks read at once: the directory holds every hook, so a deployment is assumed to have
/// a handful; more than this are not routed to (and a warning says so).
pub const HOOKS_MAX: usize = 10_000;

const COLUMNS: &str =
    "id, name, url, hook_type, active, timeout_s, retry_count, created_at, last_run, last_success";

/// `$n` on PostgreSQL, `?` on SQLite.
fn p(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

fn hook_of(row: &QueryResult) -> Result<Hook, DbErr> {
    let hook_type: String = row.try_get("", "hook_type")?;
    let timeout: i32 = row.try_get("", "timeout_s")?;
    let retries: i32 = row.try_get("", "retry_count")?;
    Ok(Hook {
        id: row.try_get("", "id")?,
        spec: HookSpec {
            name: row.try_get("", "name")?,
            url: row.try_get("", "url")?,
            // The table's CHECK allows only the two.
            hook_type: HookType::parse(&hook_type).unwrap_or(HookType::PostTransaction),
            active: row.try_get("", "active")?,
            timeout_s: u32::try_from(timeout).unwrap_or(0),
            retry_count: u32::try_from(retries).unwrap_or(0),
        },
        created_at: row.try_get::<DateTime<Utc>>("", "created_at")?,
        last_run: row.try_get::<Option<DateTime<Utc>>>("", "last_run")?,
        last_success: row.try_get("", "last_success")?,
    })
}

async fn find<C: ConnectionTrait>(db: &C, id: &str) -> Result<Option<Hook>, DbErr> {
    let backend = db.get_database_backend();
    let sql = format!(
        "SELECT {COLUMNS} FROM transaction_hooks WHERE id = {}",
        p(backend, 1)
    );
    let row = db
        .query_one_raw(Statement::from_sql_and_values(backend, sql, [id.into()]))
        .await?;
    row.as_ref().map(hook_of).transpose()
}

/// Every hook (of `hook_type`), oldest first.
async fn all<C: ConnectionTrait>(db: &C, hook_type: Option<HookType>) -> Result<Vec<Hook>, DbErr> {
    let backend = db.get_database_backend();
    let limit = i64::try_from(HOOKS_MAX).unwrap_or(i64::MAX);
    let (sql, values): (String, Vec<Value>) = match hook_type {
        None => (
            format!(
                "SELECT {COLUMNS} FROM transaction_hooks ORDER BY created_at, id LIMIT {}",
                p(backend, 1)
            ),
            vec![limit.into()],
        ),
        Some(hook_type) => (
            format!(
                "SELECT {COLUMNS} FROM transaction_hooks WHERE hook_type = {} \
                 ORDER BY created_at, id LIMIT {}",
                p(backend, 1),
                p(backend, 2)
            ),
            vec![hook_type.as_str().into(), limit.into()],
        ),
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter().map(hook_of).collect()
}

fn spec_values(spec: &HookSpec) -> Vec<Value> {
    vec![
        spec.name.clone().into(),
        spec.url.clone().into(),
        spec.hook_type.as_str().into(),
        spec.active.into(),
        i32::try_from(spec.timeout_s).unwrap_or(i32::MAX).into(),
        i32::try_from(spec.retry_count).unwrap_or(i32::MAX).into(),
    ]
}

impl Store {
    /// This process's directory of hooks (shared by the write path's route and the sink).
    pub fn hook_directory(&self) -> &Arc<HookDirectory> {
        &self.hooks
    }

    pub async fn create_hook(&self, id: String, spec: HookSpec) -> Result<Hook, LedgerError> {
        let hook = Hook {
            id,
            spec,
            // Whole microseconds: what both backends store, so the answer equals a read.
            created_at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros())
                .unwrap_or_else(Utc::now),
            last_run: None,
            last_success: false,
        };
        let stored = hook.clone();
        self.run(|db| async move {
            let backend = db.get_database_backend();
            let placeholders: Vec<String> = (1..=8).map(|n| p(backend, n)).collect();
            let sql = format!(
                "INSERT INTO transaction_hooks \
                 (id, name, url, hook_type, active, timeout_s, retry_count, created_at) \
                 VALUES ({})",
                placeholders.join(", ")
            );
            let mut values = vec![stored.id.clone().into()];
            values.extend(spec_values(&stored.spec));
            values.push(stored.created_at.into());
            db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            Ok(())
        })
        .await?;
        self.hooks.upsert(hook.clone());
        Ok(hook)
    }

    pub async fn hook(&self, id: &str) -> Result<Hook, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move { find(&db, &id).await?.ok_or(LedgerError::HookNotFound(id)) })
            .await
    }

    /// Every hook, or those of one type, oldest first.
    pub async fn list_hooks(&self, hook_type: Option<HookType>) -> Result<Vec<Hook>, LedgerError> {
        self.run(move |db| async move { all(&db, hook_type).await.map_err(LedgerError::from) })
            .await
    }

    /// `PUT`: the name, URL, type, active flag, timeout and retries; the id, creation time
    /// and the last run are kept.
    pub async fn replace_hook(&self, id: &str, spec: HookSpec) -> Result<Hook, LedgerError> {
        let id = id.to_owned();
        let hook = self
            .run(|db| async move {
                let backend = db.get_database_backend();
                let txn = db.begin().await?;
                let sql = format!(
                    "UPDATE transaction_hooks SET name = {}, url = {}, hook_type = {}, \
                     active = {}, timeout_s = {}, retry_count = {} WHERE id = {}",
                    p(backend, 1),
                    p(backend, 2),
                    p(backend, 3),
                    p(backend, 4),
                    p(backend, 5),
                    p(backend, 6),
                    p(backend, 7)
                );
                let mut values = spec_values(&spec);
                values.push(id.clone().into());
                let updated = txn
                    .execute_raw(Statement::from_sql_and_values(backend, sql, values))
                    .await?;
                if updated.rows_affected() == 0 {
                    return Err(LedgerError::HookNotFound(id));
                }
                let hook = find(&txn, &id)
                    .await?
                    .ok_or_else(|| LedgerError::HookNotFound(id.clone()))?;
                txn.commit().await?;
                Ok(hook)
            })
            .await?;
        self.hooks.upsert(hook.clone());
        Ok(hook)
    }

    /// Deletes a hook and its undelivered events (they are for nobody now).
    pub async fn delete_hook(&self, id: &str) -> Result<(), LedgerError> {
        let id = id.to_owned();
        let removed = id.clone();
        self.run(|db| async move {
            let backend = db.get_database_backend();
            let txn = db.begin().await?;
            let sql = format!("DELETE FROM transaction_hooks WHERE id = {}", p(backend, 1));
            let deleted = txn
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [id.clone().into()],
                ))
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(LedgerError::HookNotFound(id));
            }
            let sql = format!(
                "DELETE FROM outbox_events WHERE sink = {} AND status = 'pending'",
                p(backend, 1)
            );
            let sink = format!("{HOOK_SINK_PREFIX}{id}");
            txn.execute_raw(Statement::from_sql_and_values(backend, sql, [sink.into()]))
                .await?;
            txn.commit().await?;
            Ok(())
        })
        .await?;
        self.hooks.remove(&removed);
        Ok(())
    }

    /// Records a delivery's time and whether it succeeded.
    pub async fn record_hook_run(
        &self,
        id: &str,
        at: DateTime<Utc>,
        success: bool,
    ) -> Result<(), LedgerError> {
        let id = id.to_owned();
        self.run(move |db| async move {
            let backend = db.get_database_backend();
            let sql = format!(
                "UPDATE transaction_hooks SET last_run = {}, last_success = {} WHERE id = {}",
                p(backend, 1),
                p(backend, 2),
                p(backend, 3)
            );
            let values: Vec<Value> = vec![at.into(), success.into(), id.into()];
            db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            Ok(())
        })
        .await
    }

    /// Loads the directory now, then re-reads it every `refresh_ms` on the database runtime
    /// (so hooks made, changed or deleted by other processes reach this one's write path
    /// within that time). The loop ends with the last store. A failed read is logged; the
    /// directory keeps what it had.
    pub async fn watch_hooks(&self, refresh_ms: u64) {
        let read = self
            .run(|db| async move { all(&db, None).await.map_err(LedgerError::from) })
            .await;
        match read {
            Ok(hooks) => self.hooks.replace(hooks),
            Err(error) => tracing::warn!(%error, "reading the transaction hooks failed"),
        }
        let Some(runtime) = self.runtime.0.as_ref() else {
            return;
        };
        super::reload_every(
            runtime.handle(),
            self.db.clone(),
            Arc::downgrade(&self.hooks),
            Duration::from_millis(refresh_ms.max(1)),
            false,
            |db| async move { all(&db, None).await },
            refreshed,
        );
    }
}

fn refreshed(directory: &HookDirectory, read: Result<Vec<Hook>, DbErr>, _: std::time::Instant) {
    match read {
        Ok(hooks) => {
            if hooks.len() >= HOOKS_MAX {
                tracing::warn!(
                    hooks_max = HOOKS_MAX,
                    "more transaction hooks than are routed"
                );
            }
            directory.replace(hooks);
        }
        Err(error) => tracing::warn!(%error, "refreshing the transaction hooks failed"),
    }
}
