use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Dead outbox events by sink: the workers' health check and the metrics count them on
/// every probe and scrape, and `coffer events dead` lists them. Without this index each
/// count scans every row kept (delivered rows stay for the retention period); dead rows are
/// few, so the partial index is small.
const INDEX: &str =
    "CREATE INDEX idx_outbox_dead ON outbox_events (sink, id) WHERE status = 'dead'";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(INDEX).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_outbox_dead")
            .await?;
        Ok(())
    }
}
