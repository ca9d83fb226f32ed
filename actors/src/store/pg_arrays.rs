//! The group commit's statements on PostgreSQL, each with one fixed text whatever the batch
//! size: every list travels as one array parameter (`= ANY($1)`, `unnest(…)`).
//!
//! A statement whose text depends on the batch (an `IN ($1, …, $n)` list, a multi-row
//! `VALUES`) is parsed and planned anew for nearly every batch: one more round trip, and
//! the server plans a thousand parameters. With fixed texts each statement is prepared once
//! per connection. Arrays are bound as text literals (see [`text_array`]) and cast on the
//! server, so no driver array support is needed; amounts are read back as `::text`, exact.
//!
//! Lists are not tested with `= ANY($1)`: after a few runs PostgreSQL caches a generic plan,
//! and for `= ANY($1)` of unknown length that plan can be a sequential scan testing every
//! row against the whole array (seen: 8.5 s to lock 2,000 of 10,000 balances). A plain join
//! with `unnest($1)` is no safer: for a thousand keys the planner prices a thousand index
//! probes above one pass over the table (it assumes uncached pages), and picks a hash join
//! over the whole table, slower as the table grows (seen: 41 ms to check 1,000 references
//! among 80,000 rows, 4 ms by index). So every lookup walks the array and probes the index
//! per element: [`probe`] writes it as a `LATERAL` subquery that cannot be flattened into a
//! join (`OFFSET 0`), so the only plan is a nested loop over the array.

use super::balances::{BalanceRow, BalanceState};
use crate::domain::amount::Precision;
use crate::domain::balance::BalanceAmounts;
use crate::domain::batch::BalanceGuard;
use crate::domain::TransactionRecord;
use crate::entity::transaction;
use bigdecimal::num_bigint::BigInt;
use bigdecimal::Zero;
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, Statement, Value,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::str::FromStr;

/// A PostgreSQL array literal: every element double-quoted with `"` and `\` escaped (so any
/// text, including commas, braces, quotes and the word NULL, stays one element); `None` is an
/// SQL NULL element.
pub fn text_array<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut array = ArrayLiteral::new();
    for value in values {
        array.push(value);
    }
    array.finish()
}

/// [`text_array`] built element by element, so callers can format values into a reused
/// buffer instead of allocating one string each.
struct ArrayLiteral {
    literal: String,
    empty: bool,
}

impl ArrayLiteral {
    fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Room for `bytes` of literal up front: a bulk batch's arrays run to tens of kilobytes,
    /// and growing them by doubling copied each several times.
    fn with_capacity(bytes: usize) -> Self {
        let mut literal = String::with_capacity(bytes.max(2));
        literal.push('{');
        Self {
            literal,
            empty: true,
        }
    }

    fn push(&mut self, value: Option<&str>) {
        if !self.empty {
            self.literal.push(',');
        }
        self.empty = false;
        match value {
            None => self.literal.push_str("NULL"),
            Some(text) => {
                self.literal.reserve(text.len() + 2);
                self.literal.push('"');
                // The runs between characters to escape are copied whole (usually the
                // whole value: ids and amounts never have one).
                let mut rest = text;
                while let Some(at) = rest.bytes().position(|b| b == b'"' || b == b'\\') {
                    self.literal.push_str(&rest[..at]);
                    self.literal.push('\\');
                    self.literal.push_str(&rest[at..at + 1]);
                    rest = &rest[at + 1..];
                }
                self.literal.push_str(rest);
                self.literal.push('"');
            }
        }
    }

    fn finish(mut self) -> String {
        self.literal.push('}');
        self.literal
    }
}

pub(super) fn bind(literal: String) -> Value {
    Value::String(Some(literal))
}

pub(super) fn statement(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `FROM <keys> CROSS JOIN LATERAL (SELECT <columns> FROM <table> WHERE <condition> …) AS
/// <alias>`: one index probe a key, in the keys' order; `tail` may lock the rows (`FOR
/// UPDATE`). `OFFSET 0` keeps the planner from flattening the subquery into a join it
/// would run as a scan of the whole table.
pub(super) fn probe(keys: &str, columns: &str, table: &str, condition: &str, tail: &str) -> String {
    let alias = table.rsplit(' ').next().unwrap_or(table);
    format!(
        "FROM {keys} CROSS JOIN LATERAL (SELECT {columns} FROM {table} WHERE {condition} \
         OFFSET 0 {tail}) AS {alias}"
    )
}

/// The stored rows (`reference, status`) among the references in array parameter `$n`.
fn references_probe(n: usize) -> String {
    probe(
        &format!("unnest(CAST(${n} AS text[])) AS wanted(reference)"),
        "t.reference, t.status",
        "transactions AS t",
        "t.reference = wanted.reference",
        "",
    )
}

/// `reference → status` of the stored rows among `references`.
pub async fn stored_references(
    txn: &DatabaseTransaction,
    references: &[String],
) -> Result<HashMap<String, String>, DbErr> {
    let sql = format!("SELECT t.reference, t.status {}", references_probe(1));
    let array = text_array(references.iter().map(|r| Some(r.as_str())));
    let rows = txn
        .query_all_raw(statement(&sql, vec![bind(array)]))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "reference")?, row.try_get("", "status")?)))
        .collect()
}

/// The transaction rows with these ids (missing ids are simply absent).
pub async fn transactions_by_ids<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
) -> Result<Vec<transaction::Model>, DbErr> {
    let sql = format!(
        "SELECT t.* {}",
        probe(
            "unnest(CAST($1 AS text[])) AS wanted(id)",
            "t.*",
            "transactions AS t",
            "t.transaction_id = wanted.id",
            "",
        )
    );
    let array = text_array(ids.iter().map(|id| Some(id.as_str())));
    transaction::Entity::find()
        .from_raw_sql(statement(&sql, vec![bind(array)]))
        .all(db)
        .await
}

/// `(indicator, currency) → balance id` of the stored indicator balances among `keys`.
pub async fn indicator_ids<C: ConnectionTrait>(
    db: &C,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), String>, DbErr> {
    let sql = format!(
        "SELECT b.balance_id, b.indicator, b.currency {}",
        probe(
            "unnest(CAST($1 AS text[]), CAST($2 AS text[])) AS wanted(indicator, currency)",
            "b.balance_id, b.indicator, b.currency",
            "balances AS b",
            INDICATOR_MATCH,
            "",
        )
    );
    let indicators = text_array(keys.iter().map(|(indicator, _)| Some(indicator.as_str())));
    let currencies = text_array(keys.iter().map(|(_, currency)| Some(currency.as_str())));
    let rows = db
        .query_all_raw(statement(&sql, vec![bind(indicators), bind(currencies)]))
        .await?;
    indicator_rows(&rows)
}

/// Creates the missing General Ledger balances of `(indicator, currency)` keys (`ids[i]` for
/// `keys[i]`) and returns the ids of all of them, in one statement (no transaction round
/// trips). A key another process inserts while this statement runs is skipped by the insert
/// and not yet visible to its read, so it can be absent from the answer: read again then.
pub async fn create_indicators<C: ConnectionTrait>(
    db: &C,
    keys: &[(String, String)],
    ids: &[String],
) -> Result<HashMap<(String, String), String>, DbErr> {
    let sql = format!(
        "WITH wanted AS (SELECT * FROM unnest(CAST($1 AS text[]), CAST($2 AS text[]), \
         CAST($3 AS text[])) AS w(balance_id, indicator, currency)), \
         created AS (INSERT INTO balances (balance_id, ledger_id, indicator, currency, \
         created_at) SELECT balance_id, $4, indicator, currency, now() FROM wanted \
         ON CONFLICT (indicator, currency) DO NOTHING \
         RETURNING balance_id, indicator, currency) \
         SELECT balance_id, indicator, currency FROM created \
         UNION ALL SELECT b.balance_id, b.indicator, b.currency {}",
        probe(
            "wanted",
            "b.balance_id, b.indicator, b.currency",
            "balances AS b",
            INDICATOR_MATCH,
            "",
        )
    );
    debug_assert_eq!(ids.len(), keys.len(), "one proposed id per key");
    let values = vec![
        bind(text_array(ids.iter().map(|id| Some(id.as_str())))),
        bind(text_array(keys.iter().map(|(i, _)| Some(i.as_str())))),
        bind(text_array(keys.iter().map(|(_, c)| Some(c.as_str())))),
        Value::String(Some(crate::domain::ids::GENERAL_LEDGER_ID.to_owned())),
    ];
    let rows = db.query_all_raw(statement(&sql, values)).await?;
    indicator_rows(&rows)
}

/// An indicator balance is found by its `(indicator, currency)` pair (a unique index).
const INDICATOR_MATCH: &str = "b.indicator = wanted.indicator AND b.currency = wanted.currency";

/// `(indicator, currency) → balance id` from rows of `balance_id, indicator, currency`.
fn indicator_rows(
    rows: &[sea_orm::QueryResult],
) -> Result<HashMap<(String, String), String>, DbErr> {
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("", "indicator")?, row.try_get("", "currency")?),
                row.try_get("", "balance_id")?,
            ))
        })
        .collect()
}

/// Reads and locks the balances, in id order (`ids` sorted), amounts as exact text.
pub async fn lock_balances(
    txn: &DatabaseTransaction,
    ids: &[String],
) -> Result<HashMap<String, BalanceRow>, DbErr> {
    read_balances(txn, ids, "FOR UPDATE").await
}

/// Reads the balances without locking them.
pub async fn balance_rows<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
) -> Result<HashMap<String, BalanceRow>, DbErr> {
    read_balances(db, ids, "").await
}

/// The columns of [`STATE_COLUMNS`] (a macro, so both are one literal): what a commit
/// changes of a balance, amounts as exact text.
macro_rules! state_columns {
    () => {
        "b.balance_id, CAST(b.credit_balance AS text) AS credit, \
         CAST(b.debit_balance AS text) AS debit, \
         CAST(b.inflight_credit_balance AS text) AS inflight_credit, \
         CAST(b.inflight_debit_balance AS text) AS inflight_debit, b.version"
    };
}

/// What a commit changes of a balance ([`BalanceState`]), amounts as exact text.
const STATE_COLUMNS: &str = state_columns!();

/// The columns a balance is read with: [`STATE_COLUMNS`], its currency and its precision.
const BALANCE_COLUMNS: &str = concat!(
    state_columns!(),
    ", b.currency, CAST(b.precision AS text) AS precision"
);

/// Balances of the ids in array parameter `$n`, in its order; `tail` may lock them.
fn balances_probe(n: usize, tail: &str) -> String {
    probe(
        &format!("unnest(CAST(${n} AS text[])) AS wanted(id)"),
        BALANCE_COLUMNS,
        "balances AS b",
        "b.balance_id = wanted.id",
        tail,
    )
}

async fn read_balances<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
    tail: &str,
) -> Result<HashMap<String, BalanceRow>, DbErr> {
    // Rows are read (and locked) in the order of `ids`.
    let sql = format!("SELECT b.* {}", balances_probe(1, tail));
    let array = text_array(ids.iter().map(|id| Some(id.as_str())));
    let rows = db.query_all_raw(statement(&sql, vec![bind(array)])).await?;
    let mut balances = HashMap::with_capacity(rows.len());
    for row in &rows {
        let balance = balance_row(row)?;
        balances.insert(balance.balance_id.clone(), balance);
    }
    Ok(balances)
}

/// [`stored_references`] and [`lock_balances`] in one statement (one round trip): the
/// stored rows among `references` (`reference → status`) and the balances of `ids` (sorted),
/// locked.
pub async fn references_and_locked_balances(
    txn: &DatabaseTransaction,
    references: &[String],
    ids: &[String],
) -> Result<(HashMap<String, String>, HashMap<String, BalanceRow>), DbErr> {
    let sql = format!(
        "WITH locked AS (SELECT b.* {}), found AS (SELECT t.reference, t.status {}) \
         SELECT balance_id, currency, precision, credit, debit, inflight_credit, \
         inflight_debit, version, CAST(NULL AS text) AS reference, \
         CAST(NULL AS text) AS status FROM locked \
         UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, reference, status \
         FROM found",
        balances_probe(2, "FOR UPDATE"),
        references_probe(1)
    );
    let values = vec![
        bind(text_array(references.iter().map(|r| Some(r.as_str())))),
        bind(text_array(ids.iter().map(|id| Some(id.as_str())))),
    ];
    let rows = txn.query_all_raw(statement(&sql, values)).await?;
    let (mut stored, mut balances) = (HashMap::new(), HashMap::with_capacity(ids.len()));
    for row in &rows {
        let reference: Option<String> = row.try_get("", "reference")?;
        match reference {
            Some(reference) => {
                stored.insert(reference, row.try_get("", "status")?);
            }
            None => {
                let balance = balance_row(row)?;
                balances.insert(balance.balance_id.clone(), balance);
            }
        }
    }
    Ok((stored, balances))
}

/// A balance read with [`BALANCE_COLUMNS`].
fn balance_row(row: &sea_orm::QueryResult) -> Result<BalanceRow, DbErr> {
    let precision: Option<String> = row.try_get("", "precision")?;
    let precision = precision
        .as_deref()
        .and_then(parse_integer)
        .and_then(|value| Precision::from_bigint(value).ok());
    let state = balance_state(row)?;
    Ok(BalanceRow {
        balance_id: state.balance_id,
        currency: row.try_get("", "currency")?,
        precision,
        amounts: state.amounts,
        version: state.version,
    })
}

/// A balance read with [`STATE_COLUMNS`] (or [`BALANCE_COLUMNS`], which include them).
fn balance_state(row: &sea_orm::QueryResult) -> Result<BalanceState, DbErr> {
    let integer = |column: &str| -> Result<BigInt, DbErr> {
        let text: String = row.try_get("", column)?;
        parse_integer(&text)
            .ok_or_else(|| DbErr::Type(format!("balances.{column} is not an integer: {text}")))
    };
    Ok(BalanceState {
        balance_id: row.try_get("", "balance_id")?,
        amounts: BalanceAmounts {
            credit: integer("credit")?,
            debit: integer("debit")?,
            inflight_credit: integer("inflight_credit")?,
            inflight_debit: integer("inflight_debit")?,
        },
        version: row.try_get("", "version")?,
    })
}

/// An integer read as text, exact: most fit an `i64`, parsed without the general
/// arbitrary-size conversion (a bulk batch reads back thousands).
pub(super) fn parse_integer(text: &str) -> Option<BigInt> {
    match text.parse::<i64>() {
        Ok(small) => Some(BigInt::from(small)),
        Err(_) => BigInt::from_str(text).ok(),
    }
}

/// The balance update of a batch: every balance's new amounts, guarded by the version it was
/// read at (`version - 1`). Parameters start at `$first`.
fn balance_update(rows: &[BalanceRow], first: usize) -> (String, Vec<Value>) {
    let p = |n: usize| format!("${}", first + n);
    let sql = format!(
        "UPDATE balances AS b SET credit_balance = v.credit, debit_balance = v.debit, \
         balance = v.balance, inflight_credit_balance = v.inflight_credit, \
         inflight_debit_balance = v.inflight_debit, inflight_balance = v.inflight, \
         version = v.version \
         FROM unnest(CAST({} AS text[]), CAST({} AS numeric[]), CAST({} AS numeric[]), \
         CAST({} AS numeric[]), CAST({} AS numeric[]), CAST({} AS numeric[]), \
         CAST({} AS numeric[]), CAST({} AS bigint[])) \
         AS v(id, credit, debit, balance, inflight_credit, inflight_debit, inflight, version) \
         WHERE b.balance_id = v.id AND b.version = v.version - 1",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7)
    );
    let column = |f: &dyn Fn(&BalanceRow) -> String| {
        let values: Vec<String> = rows.iter().map(f).collect();
        bind(text_array(values.iter().map(|v| Some(v.as_str()))))
    };
    let values = vec![
        column(&|r| r.balance_id.clone()),
        column(&|r| r.amounts.credit.to_string()),
        column(&|r| r.amounts.debit.to_string()),
        column(&|r| r.amounts.balance().to_string()),
        column(&|r| r.amounts.inflight_credit.to_string()),
        column(&|r| r.amounts.inflight_debit.to_string()),
        column(&|r| r.amounts.inflight_balance().to_string()),
        column(&|r| r.version.to_string()),
    ];
    (sql, values)
}

/// Adds each guard's net change to its balance, only where the balance's `available`
/// (`credit − debit − inflight_debit`) meets the guard's minimum, and returns the rows
/// changed, as they are now; a balance missing or below its minimum is left out. Rows are
/// taken in the order of the guards (balance ids sorted: the array drives the nested loop,
/// hash and merge joins being off), so concurrent batches lock in one order; a row another
/// transaction changed meanwhile is waited for, and its guard is checked on the new row.
///
/// `records` (if any) are inserted by the same statement: all of them, whatever the guards
/// say, so the caller rolls back when fewer balances than guards come back.
pub async fn write_guarded(
    txn: &DatabaseTransaction,
    guards: &BTreeMap<&str, BalanceGuard>,
    records: &[&TransactionRecord],
) -> Result<Vec<BalanceState>, DbErr> {
    if guards.is_empty() {
        // Rows that move no balance (QUEUED and SCHEDULED intake).
        insert_transactions(txn, records).await?;
        return Ok(Vec::new());
    }
    // A change a balance does not have is NULL (read as 0), and a column no balance has a
    // change in is one NULL: a bulk batch moves no inflight amounts, and PostgreSQL then
    // parses and unnests two arrays of zeros less (see `transaction_insert`).
    let update = format!(
        "UPDATE balances AS b SET credit_balance = b.credit_balance + {credit}, \
         debit_balance = b.debit_balance + {debit}, \
         balance = (b.credit_balance + {credit}) - (b.debit_balance + {debit}), \
         inflight_credit_balance = b.inflight_credit_balance + {inflight_credit}, \
         inflight_debit_balance = b.inflight_debit_balance + {inflight_debit}, \
         inflight_balance = (b.inflight_credit_balance + {inflight_credit}) \
         - (b.inflight_debit_balance + {inflight_debit}), version = b.version + 1 \
         FROM unnest(CAST($1 AS text[]), CAST($2 AS numeric[]), CAST($3 AS numeric[]), \
         CAST($4 AS numeric[]), CAST($5 AS numeric[]), CAST($6 AS numeric[])) \
         AS v(id, credit, debit, inflight_credit, inflight_debit, available_min) \
         WHERE b.balance_id = v.id AND (v.available_min IS NULL OR \
         b.credit_balance - b.debit_balance - b.inflight_debit_balance >= v.available_min) \
         RETURNING {STATE_COLUMNS}",
        credit = "COALESCE(v.credit, 0)",
        debit = "COALESCE(v.debit, 0)",
        inflight_credit = "COALESCE(v.inflight_credit, 0)",
        inflight_debit = "COALESCE(v.inflight_debit, 0)",
    );
    // Zero changes go as NULL; a zero minimum does not (NULL: no minimum).
    let change = |f: &dyn Fn(&BalanceGuard) -> &BigInt| {
        numbers_array(guards.values().map(|g| Some(f(g)).filter(|n| !n.is_zero())))
    };
    let mut values = vec![
        bind(text_array(guards.keys().map(|id| Some(*id)))),
        change(&|g| &g.net.credit),
        change(&|g| &g.net.debit),
        change(&|g| &g.net.inflight_credit),
        change(&|g| &g.net.inflight_debit),
        numbers_array(guards.values().map(|g| g.available_min.as_ref())),
    ];
    let sql = if records.is_empty() {
        update
    } else {
        let (insert, more) = transaction_insert(records, values.len() + 1);
        values.extend(more);
        // Data-modifying CTEs run whether or not the outer query reads them.
        format!(
            "WITH updated AS ({update}), inserted AS ({insert} RETURNING 1) SELECT * FROM updated"
        )
    };
    let rows = txn.query_all_raw(statement(&sql, values)).await?;
    rows.iter().map(balance_state).collect()
}

/// Room set aside per element of a formatted column (amounts, timestamps, metadata): a
/// timestamp with its quotes takes 30 bytes; longer values grow the literal.
const WRITTEN_ELEMENT_BYTES: usize = 32;

/// An array parameter of values each written by `write` into one reused buffer (`false`: a
/// NULL element), or one NULL when no value is present: a multi-argument `unnest` pads a
/// missing array with NULLs, so PostgreSQL parses and unnests one array less.
fn written_array<T>(
    values: impl ExactSizeIterator<Item = T>,
    element_bytes: usize,
    write: impl Fn(T, &mut String) -> bool,
) -> Value {
    let (mut array, mut buffer, mut any) = (
        ArrayLiteral::with_capacity(values.len() * element_bytes),
        String::new(),
        false,
    );
    for value in values {
        buffer.clear();
        let present = write(value, &mut buffer);
        any |= present;
        array.push(present.then_some(buffer.as_str()));
    }
    if any {
        bind(array.finish())
    } else {
        Value::String(None)
    }
}

/// An array parameter of integers (`None`: a NULL element; see [`written_array`]).
fn numbers_array<'a>(numbers: impl ExactSizeIterator<Item = Option<&'a BigInt>>) -> Value {
    written_array(numbers, 8, |number, out| {
        number.is_some_and(|number| write!(out, "{number}").is_ok())
    })
}

/// The insert of a batch's rows: a column array each, zipped by `unnest`. Parameters start
/// at `$first`.
fn transaction_insert(records: &[&TransactionRecord], first: usize) -> (String, Vec<Value>) {
    const CASTS: [&str; 22] = [
        "text",
        "text",
        "text",
        "text",
        "text",
        "numeric",
        "numeric",
        "text",
        "text",
        "text",
        "text",
        "boolean",
        "numeric",
        "boolean",
        "boolean",
        "boolean",
        "timestamptz",
        "timestamptz",
        "timestamptz",
        "timestamptz",
        "timestamptz",
        "jsonb",
    ];
    let arrays: Vec<String> = CASTS
        .iter()
        .enumerate()
        .map(|(n, cast)| format!("CAST(${} AS {cast}[])", first + n))
        .collect();
    let sql = format!(
        "INSERT INTO transactions (transaction_id, parent_transaction, source, \
         destination, reference, precise_amount, precision, currency, description, \
         status, hash, allow_overdraft, overdraft_limit, inflight, skip_queue, atomic, \
         created_at, effective_date, scheduled_for, inflight_expiry_date, \
         inflight_commit_date, meta_data) SELECT * FROM unnest({})",
        arrays.join(", ")
    );
    // Text columns are copied straight into their literal; other values are written into one
    // reused buffer (`false`: NULL). A column no row has a value in is bound as NULL, not as
    // an array of NULLs: `unnest` of several arrays pads the shorter ones with NULLs (the ids
    // give the row count), so PostgreSQL parses and unnests one array less (a bulk batch's
    // limits and four optional timestamps: ~4% of its insert).
    let text = |f: &dyn Fn(&TransactionRecord) -> Option<&str>| {
        // Each element takes its quotes and comma (escapes aside), NULL four bytes.
        let (mut bytes, mut present) = (2, false);
        for record in records {
            let value = f(record);
            present |= value.is_some();
            bytes += value.map_or(5, |text| text.len() + 3);
        }
        if !present {
            return Value::String(None);
        }
        let mut array = ArrayLiteral::with_capacity(bytes);
        for record in records {
            array.push(f(record));
        }
        bind(array.finish())
    };
    let written = |f: &dyn Fn(&TransactionRecord, &mut String) -> bool| {
        written_array(records.iter(), WRITTEN_ELEMENT_BYTES, |record, out| {
            f(record, out)
        })
    };
    let flag = |value: bool| Some(if value { "t" } else { "f" });
    let time = |value: &Option<DateTime<Utc>>, out: &mut String| match value {
        Some(t) => {
            out.push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true));
            true
        }
        None => false,
    };
    let values = vec![
        text(&|r| Some(&r.transaction_id)),
        text(&|r| r.parent_transaction.as_deref()),
        text(&|r| Some(&r.source)),
        text(&|r| Some(&r.destination)),
        text(&|r| Some(&r.reference)),
        written(&|r, out| write!(out, "{}", r.precise_amount).is_ok()),
        written(&|r, out| write!(out, "{}", r.precision.as_bigint()).is_ok()),
        text(&|r| Some(&r.currency)),
        text(&|r| r.description.as_deref()),
        text(&|r| Some(r.status.as_str())),
        text(&|r| Some(&r.hash)),
        text(&|r| flag(r.allow_overdraft)),
        written(&|r, out| match &r.overdraft_limit {
            Some(limit) => write!(out, "{limit}").is_ok(),
            None => false,
        }),
        text(&|r| flag(r.inflight)),
        text(&|r| flag(r.skip_queue)),
        text(&|r| flag(r.atomic)),
        written(&|r, out| time(&Some(r.created_at), out)),
        written(&|r, out| time(&r.effective_date, out)),
        written(&|r, out| time(&r.scheduled_for, out)),
        written(&|r, out| time(&r.inflight_expiry_date, out)),
        written(&|r, out| time(&r.inflight_commit_date, out)),
        written(&|r, out| match &r.meta_data {
            Some(meta) => write!(out, "{meta}").is_ok(),
            None => false,
        }),
    ];
    (sql, values)
}

/// Inserts rows in one statement (none: no statement). An INSERT without ON CONFLICT stores
/// every row or fails as a whole.
pub async fn insert_transactions(
    txn: &DatabaseTransaction,
    records: &[&TransactionRecord],
) -> Result<(), DbErr> {
    if records.is_empty() {
        return Ok(());
    }
    let (insert, values) = transaction_insert(records, 1);
    txn.execute_raw(statement(&insert, values)).await?;
    Ok(())
}

/// Writes a batch: the balance update and the insert of `records` (when there are any) in
/// one statement, so the balances stay locked one round trip less. Returns how many balances
/// matched their guard (fewer than `balances.len()`: another writer moved one).
pub async fn write_batch(
    txn: &DatabaseTransaction,
    balances: &[BalanceRow],
    records: &[&TransactionRecord],
) -> Result<u64, DbErr> {
    let (update, mut values) = balance_update(balances, 1);
    // Data-modifying CTEs run whether or not the outer query reads them.
    let sql = if records.is_empty() {
        format!("WITH updated AS ({update} RETURNING 1) SELECT count(*) AS updated FROM updated")
    } else {
        let (insert, more) = transaction_insert(records, values.len() + 1);
        values.extend(more);
        format!(
            "WITH updated AS ({update} RETURNING 1), inserted AS ({insert} RETURNING 1) \
             SELECT (SELECT count(*) FROM updated) AS updated"
        )
    };
    let row = txn
        .query_one_raw(statement(&sql, values))
        .await?
        .ok_or_else(|| DbErr::Custom("the batch write returned no row".into()))?;
    let updated: i64 = row.try_get("", "updated")?;
    Ok(updated as u64)
}

#[cfg(test)]
mod tests {
    use super::{parse_integer, text_array};
    use bigdecimal::num_bigint::BigInt;
    use std::str::FromStr;

    #[test]
    fn integers_read_as_text_stay_exact_beyond_i64() {
        assert_eq!(parse_integer("0"), Some(BigInt::from(0)));
        assert_eq!(parse_integer("-42"), Some(BigInt::from(-42)));
        assert_eq!(
            parse_integer("9223372036854775807"),
            Some(BigInt::from(i64::MAX))
        );
        let beyond = "-123456789012345678901234567890123456789012";
        assert_eq!(parse_integer(beyond), BigInt::from_str(beyond).ok());
        assert_eq!(parse_integer("12.5"), None);
        assert_eq!(parse_integer(""), None);
    }

    #[test]
    fn array_literal_quotes_every_element() {
        let values = [
            Some("plain"),
            Some("with,comma"),
            Some("{braces}"),
            Some("quote\"d"),
            Some("back\\slash"),
            Some("NULL"),
            Some(""),
            Some("ünï cödé 💸"),
            None,
        ];
        assert_eq!(
            text_array(values),
            r#"{"plain","with,comma","{braces}","quote\"d","back\\slash","NULL","","ünï cödé 💸",NULL}"#
        );
        assert_eq!(text_array(std::iter::empty()), "{}");
    }
}
