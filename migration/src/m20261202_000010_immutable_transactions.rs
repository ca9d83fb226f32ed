use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Transaction rows are immutable once inserted, except `meta_data` (Blnk's
/// `prevent_transaction_update`), and are never deleted: the database refuses, whoever asks.
///
/// PostgreSQL compares the whole row without `meta_data` (`to_jsonb`), so a column added
/// later is covered without touching this function; SQLite's trigger names each column.
/// Both fire on UPDATE and DELETE only: the group commit's inserts pay nothing.
/// (A superuser can still bypass triggers, e.g. `SET session_replication_role = replica`.)
const UP_POSTGRES: [&str; 2] = [
    "CREATE OR REPLACE FUNCTION transactions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'transaction rows cannot be deleted'
                USING ERRCODE = 'restrict_violation';
        END IF;
        IF (to_jsonb(NEW) - 'meta_data') IS DISTINCT FROM (to_jsonb(OLD) - 'meta_data') THEN
            RAISE EXCEPTION 'Cannot modify transaction data. Only meta_data can be updated.'
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
    END $$",
    "CREATE TRIGGER transactions_immutable BEFORE UPDATE OR DELETE ON transactions \
     FOR EACH ROW EXECUTE FUNCTION transactions_immutable()",
];

const DOWN_POSTGRES: [&str; 2] = [
    "DROP TRIGGER IF EXISTS transactions_immutable ON transactions",
    "DROP FUNCTION IF EXISTS transactions_immutable()",
];

/// Every column of `transactions` but `meta_data`.
const IMMUTABLE_COLUMNS: [&str; 21] = [
    "transaction_id",
    "parent_transaction",
    "source",
    "destination",
    "reference",
    "precise_amount",
    "precision",
    "currency",
    "description",
    "status",
    "hash",
    "allow_overdraft",
    "overdraft_limit",
    "inflight",
    "skip_queue",
    "atomic",
    "created_at",
    "effective_date",
    "scheduled_for",
    "inflight_expiry_date",
    "inflight_commit_date",
];

const DOWN_SQLITE: [&str; 2] = [
    "DROP TRIGGER IF EXISTS transactions_immutable",
    "DROP TRIGGER IF EXISTS transactions_undeletable",
];

fn sqlite_up() -> [String; 2] {
    let changed: Vec<String> = IMMUTABLE_COLUMNS
        .iter()
        .map(|column| format!("NEW.{column} IS NOT OLD.{column}"))
        .collect();
    [
        format!(
            "CREATE TRIGGER transactions_immutable BEFORE UPDATE ON transactions WHEN {} \
             BEGIN SELECT RAISE(ABORT, \
             'Cannot modify transaction data. Only meta_data can be updated.'); END",
            changed.join(" OR ")
        ),
        "CREATE TRIGGER transactions_undeletable BEFORE DELETE ON transactions \
         BEGIN SELECT RAISE(ABORT, 'transaction rows cannot be deleted'); END"
            .to_owned(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if crate::on_postgres(manager) {
            return crate::execute_statements(manager, &[], &UP_POSTGRES).await;
        }
        for sql in sqlite_up() {
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if crate::on_postgres(manager) {
            return crate::execute_statements(manager, &[], &DOWN_POSTGRES).await;
        }
        crate::execute_statements(manager, &DOWN_SQLITE, &[]).await
    }
}
