use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The id of the built-in ledger that holds every `@indicator` balance (Blnk's name for it).
const GENERAL_LEDGER_ID: &str = "general_ledger_id";

#[derive(DeriveIden)]
enum Ledgers {
    Table,
    LedgerId,
    Name,
    CreatedAt,
    MetaData,
}

#[derive(DeriveIden)]
enum Balances {
    Table,
    BalanceId,
    LedgerId,
    IdentityId,
    Indicator,
    Currency,
    Precision,
    Balance,
    CreditBalance,
    DebitBalance,
    InflightBalance,
    InflightCreditBalance,
    InflightDebitBalance,
    Version,
    CreatedAt,
    InflightExpiresAt,
    MetaData,
    TrackFundLineage,
    AllocationStrategy,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    TransactionId,
    ParentTransaction,
    Source,
    Destination,
    Reference,
    PreciseAmount,
    Precision,
    Currency,
    Description,
    Status,
    Hash,
    AllowOverdraft,
    OverdraftLimit,
    Inflight,
    SkipQueue,
    Atomic,
    CreatedAt,
    EffectiveDate,
    ScheduledFor,
    InflightExpiryDate,
    InflightCommitDate,
    MetaData,
}

/// An exact integer column: `NUMERIC` on PostgreSQL, `TEXT` on SQLite (see the crate docs).
fn money<T: IntoIden>(backend: DbBackend, name: T) -> ColumnDef {
    let mut column = ColumnDef::new(name);
    match backend {
        DbBackend::Sqlite => column.text(),
        _ => column.decimal(),
    };
    column
}

fn money_zero<T: IntoIden>(backend: DbBackend, name: T) -> ColumnDef {
    let mut column = money(backend, name);
    column.not_null().default("0");
    column
}

fn timestamp<T: IntoIden>(name: T) -> ColumnDef {
    let mut column = ColumnDef::new(name);
    column.timestamp_with_time_zone();
    column
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(Ledgers::Table)
                    .col(
                        ColumnDef::new(Ledgers::LedgerId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Ledgers::Name).text().not_null())
                    .col(timestamp(Ledgers::CreatedAt).not_null())
                    .col(ColumnDef::new(Ledgers::MetaData).json_binary().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Balances::Table)
                    .col(
                        ColumnDef::new(Balances::BalanceId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Balances::LedgerId).text().not_null())
                    .col(ColumnDef::new(Balances::IdentityId).text().null())
                    .col(ColumnDef::new(Balances::Indicator).text().null())
                    .col(ColumnDef::new(Balances::Currency).text().not_null())
                    .col(money(backend, Balances::Precision).null())
                    .col(money_zero(backend, Balances::Balance))
                    .col(money_zero(backend, Balances::CreditBalance))
                    .col(money_zero(backend, Balances::DebitBalance))
                    .col(money_zero(backend, Balances::InflightBalance))
                    .col(money_zero(backend, Balances::InflightCreditBalance))
                    .col(money_zero(backend, Balances::InflightDebitBalance))
                    .col(
                        ColumnDef::new(Balances::Version)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(timestamp(Balances::CreatedAt).not_null())
                    .col(timestamp(Balances::InflightExpiresAt).null())
                    .col(ColumnDef::new(Balances::MetaData).json_binary().null())
                    .col(
                        ColumnDef::new(Balances::TrackFundLineage)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(Balances::AllocationStrategy).text().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Balances::Table, Balances::LedgerId)
                            .to(Ledgers::Table, Ledgers::LedgerId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_balances_indicator_currency")
                    .table(Balances::Table)
                    .col(Balances::Indicator)
                    .col(Balances::Currency)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_balances_ledger_id")
                    .table(Balances::Table)
                    .col(Balances::LedgerId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Transactions::Table)
                    .col(
                        ColumnDef::new(Transactions::TransactionId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Transactions::ParentTransaction)
                            .text()
                            .null(),
                    )
                    .col(ColumnDef::new(Transactions::Source).text().not_null())
                    .col(ColumnDef::new(Transactions::Destination).text().not_null())
                    .col(ColumnDef::new(Transactions::Reference).text().not_null())
                    .col(money(backend, Transactions::PreciseAmount).not_null())
                    .col(money(backend, Transactions::Precision).not_null())
                    .col(ColumnDef::new(Transactions::Currency).text().not_null())
                    .col(ColumnDef::new(Transactions::Description).text().null())
                    .col(ColumnDef::new(Transactions::Status).text().not_null())
                    .col(ColumnDef::new(Transactions::Hash).text().not_null())
                    .col(
                        ColumnDef::new(Transactions::AllowOverdraft)
                            .boolean()
                            .not_null(),
                    )
                    .col(money(backend, Transactions::OverdraftLimit).null())
                    .col(ColumnDef::new(Transactions::Inflight).boolean().not_null())
                    .col(ColumnDef::new(Transactions::SkipQueue).boolean().not_null())
                    .col(ColumnDef::new(Transactions::Atomic).boolean().not_null())
                    .col(timestamp(Transactions::CreatedAt).not_null())
                    .col(timestamp(Transactions::EffectiveDate).null())
                    .col(timestamp(Transactions::ScheduledFor).null())
                    .col(timestamp(Transactions::InflightExpiryDate).null())
                    .col(timestamp(Transactions::InflightCommitDate).null())
                    .col(ColumnDef::new(Transactions::MetaData).json_binary().null())
                    .to_owned(),
            )
            .await?;
        for (name, column, unique) in [
            (
                "idx_transactions_reference_unique",
                Transactions::Reference,
                true,
            ),
            (
                "idx_transactions_parent",
                Transactions::ParentTransaction,
                false,
            ),
            ("idx_transactions_source", Transactions::Source, false),
            (
                "idx_transactions_destination",
                Transactions::Destination,
                false,
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Transactions::Table).col(column);
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_transactions_status_created")
                    .table(Transactions::Table)
                    .col(Transactions::Status)
                    .col(Transactions::CreatedAt)
                    .to_owned(),
            )
            .await?;
        let seed = Query::insert()
            .into_table(Ledgers::Table)
            .columns([Ledgers::LedgerId, Ledgers::Name, Ledgers::CreatedAt])
            .values_panic([
                GENERAL_LEDGER_ID.into(),
                "General Ledger".into(),
                Expr::current_timestamp(),
            ])
            .to_owned();
        manager.exec_stmt(seed).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Transactions::Table.into_iden(),
            Balances::Table.into_iden(),
            Ledgers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
