use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each outbox row is one event for one **sink** (`webhook`, `search`, `monitors`,
/// `hook:<hook_id>`): a sink delivers, retries and orders its rows on its own, so a dead
/// webhook receiver never holds back search indexing or another hook. The write path writes
/// one row per sink the event is routed to (none for a sink that does not want it), in the
/// change's transaction as before.
///
/// The dispatcher's indexes gain `sink` as their leading column: each dispatcher claims its
/// own sink's rows, and one sink's retrying rows hold back only that sink's later rows. The
/// "holding" indexes now cover only rows waiting for a retry or a closed circuit
/// (`next_attempt_ms > created_ms`), not leased ones: the lease column is then in no index and
/// no index predicate, so leasing a row is a HOT update on PostgreSQL (the claim finds leased
/// rows in its window instead; see `coffer_actors::events::outbox`), and the table keeps
/// room in its pages for those updates (fillfactor 70).
const OLD_INDEXES: [&str; 3] = [
    "idx_outbox_pending",
    "idx_outbox_holding_a",
    "idx_outbox_holding_b",
];

const INDEXES: [&str; 3] = [
    "CREATE INDEX idx_outbox_pending ON outbox_events (sink, id) WHERE status = 'pending'",
    "CREATE INDEX idx_outbox_holding_a ON outbox_events (sink, key_a, id) \
     WHERE status = 'pending' AND next_attempt_ms > created_ms",
    "CREATE INDEX idx_outbox_holding_b ON outbox_events (sink, key_b, id) \
     WHERE status = 'pending' AND next_attempt_ms > created_ms",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        connection
            .execute_unprepared(
                "ALTER TABLE outbox_events ADD COLUMN sink TEXT NOT NULL DEFAULT 'webhook'",
            )
            .await?;
        for name in OLD_INDEXES {
            connection
                .execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        for sql in INDEXES {
            connection.execute_unprepared(sql).await?;
        }
        if crate::on_postgres(manager) {
            connection
                .execute_unprepared("ALTER TABLE outbox_events SET (fillfactor = 70)")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for name in OLD_INDEXES {
            connection
                .execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        connection
            .execute_unprepared("ALTER TABLE outbox_events DROP COLUMN sink")
            .await?;
        connection
            .execute_unprepared(
                "CREATE INDEX idx_outbox_pending ON outbox_events (id) WHERE status = 'pending'",
            )
            .await?;
        for column in ["key_a", "key_b"] {
            connection
                .execute_unprepared(&format!(
                    "CREATE INDEX idx_outbox_holding_{} ON outbox_events ({column}, id) \
                     WHERE status = 'pending' AND (attempts > 0 OR leased_until_ms IS NOT NULL)",
                    &column[4..]
                ))
                .await?;
        }
        Ok(())
    }
}
