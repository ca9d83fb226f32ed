use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The transactional outbox of events (`identity.created`, `transaction.applied`, …): every
/// row is written in the database transaction of the change it tells of, and delivered
/// afterwards by the dispatcher (see `coffer_actors::events`).
///
/// - `id` only grows (an identity on PostgreSQL, `AUTOINCREMENT` on SQLite); rows of one
///   entity are inserted after that entity's row is locked, so their ids follow commit order.
/// - `payload` is Blnk's `data` object as JSON **text**, kept byte for byte: a JSONB column
///   read back into `serde_json::Value` would pass 40-digit amounts through `f64`.
/// - `key_a`/`key_b` are the entities delivery is ordered by (a transaction's source and
///   destination balance; otherwise the entity itself).
/// - `status` is `pending`, `delivered` or `dead`; times are Unix milliseconds (portable and
///   compared as integers on both backends).
/// - Partial indexes cover only what the dispatcher looks up: pending rows in id order;
///   by key, only the pending rows that hold later ones back (retrying or leased: a few,
///   however long the backlog of one hot balance grows); delivered rows by age (pruning);
///   dead rows.
const INDEXES: [&str; 5] = [
    "CREATE INDEX idx_outbox_pending ON outbox_events (id) WHERE status = 'pending'",
    "CREATE INDEX idx_outbox_holding_a ON outbox_events (key_a, id) \
     WHERE status = 'pending' AND (attempts > 0 OR leased_until_ms IS NOT NULL)",
    "CREATE INDEX idx_outbox_holding_b ON outbox_events (key_b, id) \
     WHERE status = 'pending' AND (attempts > 0 OR leased_until_ms IS NOT NULL)",
    "CREATE INDEX idx_outbox_delivered ON outbox_events (delivered_ms) WHERE status = 'delivered'",
    "CREATE INDEX idx_outbox_dead ON outbox_events (id) WHERE status = 'dead'",
];

fn table(id_column: &str) -> String {
    format!(
        "CREATE TABLE outbox_events (
            {id_column},
            event TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            key_a TEXT NOT NULL,
            key_b TEXT NULL,
            payload TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms BIGINT NOT NULL,
            leased_until_ms BIGINT NULL,
            last_error TEXT NULL,
            delivered_ms BIGINT NULL,
            CHECK (status IN ('pending', 'delivered', 'dead'))
        )"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id_column = if crate::on_postgres(manager) {
            "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        } else {
            "id INTEGER PRIMARY KEY AUTOINCREMENT"
        };
        let connection = manager.get_connection();
        connection.execute_unprepared(&table(id_column)).await?;
        for sql in INDEXES {
            connection.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS outbox_events")
            .await?;
        Ok(())
    }
}
