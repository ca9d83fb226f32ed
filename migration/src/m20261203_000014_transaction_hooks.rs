use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Blnk's transaction hooks (1.9): a URL called with each transaction's PRE or POST event.
/// Blnk keeps them in Redis only; Coffer keeps them here so every replica reads the same
/// hooks (each caches them, see `coffer_actors::events::hooks`).
///
/// - `id` is `hook_<uuid>`; `hook_type` is `PRE_TRANSACTION` or `POST_TRANSACTION`.
/// - `timeout_s` and `retry_count` are stored as served (defaults applied on the way in).
/// - `last_run` (a time, null until the first call) and `last_success` (whether that call
///   succeeded) are written by the deliveries.
const TABLE: &str = "CREATE TABLE transaction_hooks (
    id {id} PRIMARY KEY,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    hook_type TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    timeout_s INTEGER NOT NULL,
    retry_count INTEGER NOT NULL,
    created_at {time} NOT NULL,
    last_run {time} NULL,
    last_success BOOLEAN NOT NULL DEFAULT FALSE,
    CHECK (hook_type IN ('PRE_TRANSACTION', 'POST_TRANSACTION'))
)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_templates(manager, &[TABLE]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS transaction_hooks")
            .await?;
        Ok(())
    }
}
