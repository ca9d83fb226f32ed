use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Blnk's API keys (its table `api_keys`).
///
/// - The key itself is never stored: `key_hash` is its argon2id hash (PHC string), and
///   `key_prefix` (its first 16 characters, not secret enough to authenticate alone) finds
///   the row to verify against without scanning.
/// - `scopes` is a JSON array of `resource:action` strings.
/// - Keys are listed by owner.
const UP: [&str; 3] = [
    "CREATE TABLE api_keys (
        api_key_id {id} NOT NULL PRIMARY KEY,
        key_prefix {id} NOT NULL,
        key_hash TEXT NOT NULL,
        name TEXT NOT NULL,
        owner_id {id} NOT NULL,
        scopes {json} NOT NULL,
        expires_at {time} NOT NULL,
        created_at {time} NOT NULL,
        last_used_at {time} NULL,
        is_revoked BOOLEAN NOT NULL DEFAULT FALSE,
        revoked_at {time} NULL
    )",
    "CREATE UNIQUE INDEX idx_api_keys_prefix ON api_keys (key_prefix)",
    "CREATE INDEX idx_api_keys_owner ON api_keys (owner_id, created_at)",
];

const DOWN: [&str; 1] = ["DROP TABLE IF EXISTS api_keys"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_templates(manager, &UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_templates(manager, &DOWN).await
    }
}
