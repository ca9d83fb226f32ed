use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Blnk's identities, accounts and balance monitors (its tables `identity`, `accounts` and
/// `balance_monitors`, here `identities`, `accounts`, `balance_monitors`).
///
/// - Identity text fields are `NOT NULL DEFAULT ''`: Blnk serves an unset field as `""`.
///   `dob` is nullable (served as Go's zero time when unset).
/// - An account number is unique (`409 ACC_DUPLICATE`); accounts are looked up by balance
///   and by identity.
/// - A monitor keeps its condition's `value` as the exact decimal text it was given, its
///   `precision` and the exact `precise_value` (money columns: `NUMERIC` on PostgreSQL,
///   `TEXT` on SQLite, see the crate docs), and what the events issue needs to fire it
///   (`call_back_url`, `description`, `meta_data`). Monitors are read by balance.
/// - Balances are found by identity (an identity still linked is not deleted) through a
///   partial index: the `@indicator` balances, which have no identity, never enter it.
const UP: [&str; 9] = [
    "CREATE TABLE identities (
        identity_id {id} NOT NULL PRIMARY KEY,
        identity_type TEXT NOT NULL DEFAULT '',
        organization_name TEXT NOT NULL DEFAULT '',
        category TEXT NOT NULL DEFAULT '',
        first_name TEXT NOT NULL DEFAULT '',
        last_name TEXT NOT NULL DEFAULT '',
        other_names TEXT NOT NULL DEFAULT '',
        gender TEXT NOT NULL DEFAULT '',
        email_address TEXT NOT NULL DEFAULT '',
        phone_number TEXT NOT NULL DEFAULT '',
        nationality TEXT NOT NULL DEFAULT '',
        street TEXT NOT NULL DEFAULT '',
        country TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT '',
        post_code TEXT NOT NULL DEFAULT '',
        city TEXT NOT NULL DEFAULT '',
        dob {time} NULL,
        created_at {time} NOT NULL,
        meta_data {json} NULL
    )",
    "CREATE INDEX idx_identities_created_at ON identities (created_at)",
    "CREATE TABLE accounts (
        account_id {id} NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        number {id} NOT NULL,
        bank_name TEXT NOT NULL DEFAULT '',
        currency TEXT NOT NULL,
        ledger_id {id} NOT NULL,
        identity_id {id} NOT NULL,
        balance_id {id} NOT NULL,
        created_at {time} NOT NULL,
        meta_data {json} NULL
    )",
    "CREATE UNIQUE INDEX idx_accounts_number_unique ON accounts (number)",
    "CREATE INDEX idx_accounts_balance_id ON accounts (balance_id)",
    "CREATE INDEX idx_accounts_identity_id ON accounts (identity_id)",
    "CREATE TABLE balance_monitors (
        monitor_id {id} NOT NULL PRIMARY KEY,
        balance_id {id} NOT NULL,
        field TEXT NOT NULL,
        operator TEXT NOT NULL,
        value TEXT NOT NULL,
        precision {money} NOT NULL,
        precise_value {money} NOT NULL,
        description TEXT NULL,
        call_back_url TEXT NULL,
        created_at {time} NOT NULL,
        meta_data {json} NULL,
        CHECK (field IN ('debit_balance', 'credit_balance', 'balance', \
                         'inflight_debit_balance', 'inflight_credit_balance', 'inflight_balance')),
        CHECK (operator IN ('>', '<', '>=', '<=', '=', '!='))
    )",
    "CREATE INDEX idx_balance_monitors_balance_id ON balance_monitors (balance_id)",
    "CREATE INDEX idx_balances_identity_id ON balances (identity_id) WHERE identity_id IS NOT NULL",
];

const DOWN: [&str; 4] = [
    "DROP INDEX IF EXISTS idx_balances_identity_id",
    "DROP TABLE IF EXISTS balance_monitors",
    "DROP TABLE IF EXISTS accounts",
    "DROP TABLE IF EXISTS identities",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_templates(manager, &UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_templates(manager, &DOWN).await
    }
}
