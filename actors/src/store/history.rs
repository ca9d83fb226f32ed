//! Balance history: a balance as it was at a time, the snapshots that make that read cheap,
//! and the recomputation of a balance from its transactions.
//!
//! # Reading a past balance
//! The balance at `t` is the replay of its APPLIED transactions with an effective time
//! (`COALESCE(effective_date, created_at)`, back-dated entries included) at or before `t`
//! (`domain::history::replay`). [`Store::balance_at`] starts from the nearest known state
//! (the snapshot before `t`, the one after it, or the balance row itself, which holds every
//! APPLIED transaction) and adds or subtracts only the transactions between it and `t`: one
//! index range per side (migration 9), inside one read-only snapshot of the database. On
//! PostgreSQL the reads that arrive together are one statement ([`Store::balances_at`], fed
//! by the ledger's batcher), as writes are one group commit.
//!
//! # Snapshots stay exact
//! A snapshot at `T` is written by [`Store::take_snapshots`] from the previous one plus the
//! transactions after it, only up to a cutoff [`SNAPSHOT_SETTLE`] behind the snapshotter's
//! clock, with the balances' rows locked (`FOR NO KEY UPDATE SKIP LOCKED`: a balance a
//! commit holds is left for the next pass). A transaction that commits later with an
//! effective time at or before some snapshot's `T` (back-dated, or stamped long before its
//! commit) would make that snapshot wrong, so the group commit deletes the snapshots at or
//! after such a row's time ([`invalidate_snapshots`], called once the batch's balance rows
//! are updated, hence locked; a later snapshot pass takes them again). Either the snapshot's transaction held
//! the lock first and committed, and the commit's delete then sees and removes it; or the
//! commit held it first, and the snapshot, read after the commit, includes the row. Rows
//! newer than `now − SNAPSHOT_SETTLE / 2` when their batch's balances were updated cannot be
//! at or before any snapshot, as long as the clocks of Coffer's processes agree within
//! `SNAPSHOT_SETTLE / 2`: such batches (nearly all) delete nothing and pay nothing.

use super::pg_arrays::{bind, parse_integer, probe, statement, text_array};
use super::Store;
use crate::domain::history::{plan_snapshots, Entry, EntrySide, PlannedSnapshot, Totals};
use crate::entity::{balance, balance_snapshot, Money};
use crate::LedgerError;
use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, QueryResult, QuerySelect, Statement, TransactionTrait,
    Value,
};
use std::collections::HashMap;
use std::time::Duration;

/// How far behind its clock the snapshotter stays, and twice the clock difference between
/// Coffer's processes that snapshots tolerate (see the module docs).
pub const SNAPSHOT_SETTLE: Duration = Duration::from_secs(10);

/// A transaction's effective time, as the indexes of migration 9 spell it.
const EFFECTIVE: &str = "COALESCE(effective_date, created_at)";

/// A balance's totals at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalBalance {
    pub balance_id: String,
    pub currency: String,
    pub totals: Totals,
}

/// Bounds of one snapshot pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    /// Entries between two snapshots of a balance (at most; a day's end also takes one).
    pub every: usize,
    /// Entries read per balance and side in one pass; the rest waits for the next.
    pub entries_per_side_max: u64,
}

/// What a snapshot pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotPass {
    pub entries_read: u64,
    pub snapshots_written: u64,
    /// Per balance walked, in the order asked.
    pub balances: Vec<BalancePass>,
    /// The balances a commit held at that moment: not walked this time.
    pub skipped: Vec<String>,
}

/// What a snapshot pass did for one balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancePass {
    pub balance_id: String,
    /// Entries read (after its newest snapshot, up to the cutoff).
    pub read: u64,
    /// Of those, the entries after its last snapshot now: still not covered by one.
    pub remaining: u64,
    /// Entries were left unread (the pass reads a bounded number).
    pub more: bool,
}

/// The known states of a balance around a time.
struct Bases {
    currency: String,
    created_at: DateTime<Utc>,
    current: Totals,
    before: Option<(DateTime<Utc>, Totals)>,
    after: Option<(DateTime<Utc>, Totals)>,
}

/// Where a read starts.
enum Base {
    /// Nothing: every entry up to `t` is added.
    Zero,
    /// A snapshot at or before `t`: the entries after it up to `t` are added.
    Before(DateTime<Utc>, Totals),
    /// A snapshot after `t`: the entries after `t` up to it are subtracted.
    After(DateTime<Utc>, Totals),
    /// The balance row: every entry after `t` is subtracted.
    Current(Totals),
}

impl Bases {
    /// The base closest to `t` in time (a proxy for the fewest entries in between); on
    /// PostgreSQL the same rule is [`BALANCES_AT_SQL`]'s.
    fn nearest(self, t: DateTime<Utc>, now: DateTime<Utc>) -> Base {
        let gap = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).max(chrono::Duration::zero());
        let mut best = match self.before {
            Some((at, totals)) => (gap(at, t), Base::Before(at, totals)),
            None => (gap(self.created_at, t), Base::Zero),
        };
        if let Some((at, totals)) = self.after {
            if gap(t, at) < best.0 {
                best = (gap(t, at), Base::After(at, totals));
            }
        }
        if gap(t, now) < best.0 {
            best = (gap(t, now), Base::Current(self.current));
        }
        best.1
    }
}

fn integer(row: &QueryResult, column: &str) -> Result<BigInt, DbErr> {
    let text: String = row.try_get("", column)?;
    parse_integer(&text).ok_or_else(|| DbErr::Type(format!("{column} is not an integer: {text}")))
}

/// A time column: native on PostgreSQL, RFC 3339 text on SQLite (read as text, since an
/// expression such as `COALESCE(…)` has no declared type there).
fn time(row: &QueryResult, column: &str, backend: DbBackend) -> Result<DateTime<Utc>, DbErr> {
    if backend == DbBackend::Postgres {
        return row.try_get("", column);
    }
    let text: String = row.try_get("", column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| DbErr::Type(format!("{column} is not a time: {text}")))
}

fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A read-only transaction that sees one snapshot of the database.
async fn begin_read(db: &sea_orm::DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        db.begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await
    } else {
        db.begin().await
    }
}

/// The balance row and the snapshots on either side of `t`; `None` for an unknown balance.
async fn read_bases(
    txn: &DatabaseTransaction,
    balance_id: &str,
    t: DateTime<Utc>,
) -> Result<Option<Bases>, LedgerError> {
    let Some(row) = balance::Entity::find_by_id(balance_id.to_owned())
        .one(txn)
        .await?
    else {
        return Ok(None);
    };
    let snapshot = |newest_first: bool| {
        let select = balance_snapshot::Entity::find()
            .filter(balance_snapshot::Column::BalanceId.eq(balance_id));
        if newest_first {
            select
                .filter(balance_snapshot::Column::SnapshotTime.lte(t))
                .order_by_desc(balance_snapshot::Column::SnapshotTime)
        } else {
            select
                .filter(balance_snapshot::Column::SnapshotTime.gt(t))
                .order_by_asc(balance_snapshot::Column::SnapshotTime)
        }
    };
    let totals = |s: balance_snapshot::Model| {
        (
            s.snapshot_time,
            Totals {
                credit: s.credit_balance.0,
                debit: s.debit_balance.0,
            },
        )
    };
    let before = snapshot(true).one(txn).await?.map(totals);
    let after = snapshot(false).one(txn).await?.map(totals);
    Ok(Some(Bases {
        currency: row.currency,
        created_at: row.created_at,
        current: Totals {
            credit: row.credit_balance.0,
            debit: row.debit_balance.0,
        },
        before,
        after,
    }))
}

/// The totals of the balance's APPLIED entries with an effective time in `(after, upto]`
/// (an absent bound is open).
async fn sum_range<C: ConnectionTrait>(
    db: &C,
    balance_id: &str,
    after: Option<DateTime<Utc>>,
    upto: Option<DateTime<Utc>>,
) -> Result<Totals, DbErr> {
    let backend = db.get_database_backend();
    let mut values: Vec<Value> = vec![balance_id.into()];
    let mut bounds = String::new();
    let placeholder = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    for (bound, op) in [(after, ">"), (upto, "<=")] {
        if let Some(time) = bound {
            values.push(time.into());
            bounds.push_str(&format!(
                " AND {EFFECTIVE} {op} {}",
                placeholder(values.len())
            ));
        }
    }
    let side = |column: &str| {
        format!(
            "FROM transactions WHERE {column} = {} AND status = 'APPLIED'{bounds}",
            placeholder(1)
        )
    };
    if backend == DbBackend::Postgres {
        let sql = format!(
            "SELECT CAST((SELECT COALESCE(SUM(precise_amount), 0) {}) AS text) AS credit, \
             CAST((SELECT COALESCE(SUM(precise_amount), 0) {}) AS text) AS debit",
            side("destination"),
            side("source")
        );
        let row = db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("sums".into()))?;
        return Ok(Totals {
            credit: integer(&row, "credit")?,
            debit: integer(&row, "debit")?,
        });
    }
    // SQLite keeps money as text and cannot add it exactly: summed here. A balance's two
    // sides are distinct rows (source = destination is refused), so this counts each once.
    let sql = format!(
        "SELECT 'c' AS side, precise_amount {} UNION ALL SELECT 'd' AS side, precise_amount {}",
        side("destination"),
        side("source")
    );
    let mut sqlite_values = values.clone();
    sqlite_values.extend(values);
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, sqlite_values))
        .await?;
    let mut totals = Totals::default();
    for row in rows {
        let amount: Money = row.try_get("", "precise_amount")?;
        let side: String = row.try_get("", "side")?;
        if side == "c" {
            totals.credit += amount.0;
        } else {
            totals.debit += amount.0;
        }
    }
    Ok(totals)
}

/// One read of a past balance: a balance at a time, from its snapshots or (`from_source`)
/// from its transactions only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PastRead {
    pub balance_id: String,
    pub at: DateTime<Utc>,
    pub from_source: bool,
}

impl Store {
    /// The balances' totals at their times (see the module docs), many reads in one
    /// statement on PostgreSQL (the ledger's history batcher gathers concurrent ones); an
    /// unknown balance is left out. `from_source` replays every entry up to the time and
    /// ignores the snapshots. A time before the balance existed answers zero (as Blnk), or
    /// what back-dated entries put there.
    pub async fn balances_at(
        &self,
        reads: Vec<PastRead>,
    ) -> Result<HashMap<PastRead, HistoricalBalance>, LedgerError> {
        self.run(move |db| async move {
            if db.get_database_backend() == DbBackend::Postgres {
                return Ok(balances_at_postgres(&db, reads).await?);
            }
            let txn = begin_read(&db).await?;
            let mut found = HashMap::with_capacity(reads.len());
            for read in reads {
                if let Some(past) = balance_at_in(&txn, &read).await? {
                    found.insert(read, past);
                }
            }
            txn.commit().await?;
            Ok(found)
        })
        .await
    }

    /// Balance ids after `after` in id order, at most `limit` (a full snapshot pass pages
    /// through every balance with it).
    pub async fn balance_ids_after(
        &self,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<String>, LedgerError> {
        self.run(move |db| async move {
            let mut select = balance::Entity::find()
                .select_only()
                .column(balance::Column::BalanceId)
                .order_by_asc(balance::Column::BalanceId)
                .limit(limit);
            if let Some(after) = after {
                select = select.filter(balance::Column::BalanceId.gt(after));
            }
            Ok(select.into_tuple::<String>().all(&db).await?)
        })
        .await
    }

    /// Takes the snapshots due for `balance_ids` (sorted) up to `cutoff`, in one transaction
    /// with their rows locked (see the module docs).
    pub async fn take_snapshots(
        &self,
        balance_ids: Vec<String>,
        limits: SnapshotLimits,
        cutoff: DateTime<Utc>,
    ) -> Result<SnapshotPass, LedgerError> {
        debug_assert!(balance_ids.windows(2).all(|w| w[0] < w[1]));
        self.run(move |db| async move {
            let txn = db.begin().await?;
            let backend = txn.get_database_backend();
            let mut pass = SnapshotPass::default();
            let (balance_ids, newest) = if backend == DbBackend::Postgres {
                let (locked, newest) = lock_and_read_newest(&txn, &balance_ids).await?;
                pass.skipped = balance_ids
                    .into_iter()
                    .filter(|id| locked.binary_search(id).is_err())
                    .collect();
                (locked, newest)
            } else {
                let mut newest = HashMap::new();
                for id in &balance_ids {
                    let found = balance_snapshot::Entity::find()
                        .filter(balance_snapshot::Column::BalanceId.eq(id.clone()))
                        .order_by_desc(balance_snapshot::Column::SnapshotTime)
                        .one(&txn)
                        .await?;
                    if let Some(s) = found {
                        let totals = Totals {
                            credit: s.credit_balance.0,
                            debit: s.debit_balance.0,
                        };
                        newest.insert(id.clone(), (s.snapshot_time, totals));
                    }
                }
                (balance_ids, newest)
            };
            let mut entries = read_entries(&txn, &balance_ids, &newest, cutoff, limits).await?;
            let mut planned_all: Vec<(String, PlannedSnapshot)> = Vec::new();
            for id in &balance_ids {
                let (start_at, start) = match newest.get(id) {
                    Some((at, totals)) => (Some(*at), totals.clone()),
                    None => (None, Totals::default()),
                };
                let read = entries.remove(id).unwrap_or_default();
                let read_count = read.entries.len() as u64;
                pass.entries_read += read_count;
                let (planned, (remaining, more)) =
                    plan_balance(&txn, id, start_at, start, read, limits, cutoff).await?;
                pass.balances.push(BalancePass {
                    balance_id: id.clone(),
                    read: read_count,
                    remaining,
                    more,
                });
                planned_all.extend(planned.into_iter().map(|p| (id.clone(), p)));
            }
            pass.snapshots_written = planned_all.len() as u64;
            insert_snapshots(&txn, &planned_all).await?;
            txn.commit().await?;
            Ok(pass)
        })
        .await
    }
}

/// [`Store::balances_at`] on PostgreSQL: every read of the batch in one statement (one
/// snapshot of the database, one round trip). Per read: the balance row, the snapshots on
/// either side of its time (none for `from_source`), the nearest base by [`Bases::nearest`]'s
/// rule (ties: the snapshot before or nothing, then the one after, then the balance row), and
/// the sums between that base and the time, one index range per side. The base is picked by
/// `CASE` over the three gaps, not by sorting candidate rows: a sort node per read cost about
/// a tenth of the statement.
const BALANCES_AT_SQL: &str = "SELECT w.ord, b.currency, base.forward, \
        CAST(base.credit AS text) AS base_credit, CAST(base.debit AS text) AS base_debit, \
        CAST((SELECT COALESCE(SUM(t.precise_amount), 0) FROM transactions AS t \
            WHERE t.destination = w.id AND t.status = 'APPLIED' \
            AND COALESCE(t.effective_date, t.created_at) > base.lo \
            AND COALESCE(t.effective_date, t.created_at) <= base.hi) AS text) AS credit, \
        CAST((SELECT COALESCE(SUM(t.precise_amount), 0) FROM transactions AS t \
            WHERE t.source = w.id AND t.status = 'APPLIED' \
            AND COALESCE(t.effective_date, t.created_at) > base.lo \
            AND COALESCE(t.effective_date, t.created_at) <= base.hi) AS text) AS debit \
    FROM unnest(CAST($1 AS text[]), CAST($2 AS timestamptz[]), CAST($3 AS boolean[])) \
        WITH ORDINALITY AS w(id, t, from_source, ord) \
    CROSS JOIN LATERAL (SELECT currency, created_at, credit_balance, debit_balance \
        FROM balances WHERE balance_id = w.id OFFSET 0) AS b \
    LEFT JOIN LATERAL (SELECT snapshot_time, credit_balance, debit_balance \
        FROM balance_snapshots WHERE balance_id = w.id AND snapshot_time <= w.t \
        AND NOT w.from_source ORDER BY snapshot_time DESC LIMIT 1) AS before ON true \
    LEFT JOIN LATERAL (SELECT snapshot_time, credit_balance, debit_balance \
        FROM balance_snapshots WHERE balance_id = w.id AND snapshot_time > w.t \
        AND NOT w.from_source ORDER BY snapshot_time LIMIT 1) AS after ON true \
    CROSS JOIN LATERAL (SELECT \
        COALESCE(w.t - before.snapshot_time, GREATEST(w.t - b.created_at, interval '0')) \
            AS before_gap, \
        after.snapshot_time - w.t AS after_gap, \
        GREATEST(now() - w.t, interval '0') AS current_gap) AS gap \
    CROSS JOIN LATERAL (SELECT CASE \
        WHEN w.from_source OR (gap.before_gap <= gap.current_gap \
            AND (gap.after_gap IS NULL OR gap.before_gap <= gap.after_gap)) THEN 0 \
        WHEN gap.after_gap <= gap.current_gap THEN 1 \
        ELSE 2 END AS pick) AS pick \
    CROSS JOIN LATERAL (SELECT pick.pick = 0 AS forward, \
        CASE pick.pick WHEN 0 THEN COALESCE(before.snapshot_time, CAST('-infinity' AS timestamptz)) \
            ELSE w.t END AS lo, \
        CASE pick.pick WHEN 0 THEN w.t WHEN 1 THEN after.snapshot_time \
            ELSE CAST('infinity' AS timestamptz) END AS hi, \
        CASE pick.pick WHEN 0 THEN COALESCE(before.credit_balance, 0) \
            WHEN 1 THEN after.credit_balance ELSE b.credit_balance END AS credit, \
        CASE pick.pick WHEN 0 THEN COALESCE(before.debit_balance, 0) \
            WHEN 1 THEN after.debit_balance ELSE b.debit_balance END AS debit) AS base";

async fn balances_at_postgres(
    db: &sea_orm::DatabaseConnection,
    reads: Vec<PastRead>,
) -> Result<HashMap<PastRead, HistoricalBalance>, DbErr> {
    let column = |f: &dyn Fn(&PastRead) -> String| {
        let values: Vec<String> = reads.iter().map(f).collect();
        bind(text_array(values.iter().map(|v| Some(v.as_str()))))
    };
    let values = vec![
        column(&|r| r.balance_id.clone()),
        column(&|r| rfc3339(&r.at)),
        column(&|r| if r.from_source { "t" } else { "f" }.to_owned()),
    ];
    let rows = db.query_all_raw(statement(BALANCES_AT_SQL, values)).await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let ord: i64 = row.try_get("", "ord")?;
        let Some(read) = usize::try_from(ord - 1).ok().and_then(|i| reads.get(i)) else {
            return Err(DbErr::Type(format!("no read {ord} in the batch")));
        };
        let base = Totals {
            credit: integer(row, "base_credit")?,
            debit: integer(row, "base_debit")?,
        };
        let between = Totals {
            credit: integer(row, "credit")?,
            debit: integer(row, "debit")?,
        };
        let forward: bool = row.try_get("", "forward")?;
        let totals = if forward {
            more(base, between)
        } else {
            less(base, between)
        };
        let past = HistoricalBalance {
            balance_id: read.balance_id.clone(),
            currency: row.try_get("", "currency")?,
            totals,
        };
        found.insert(read.clone(), past);
    }
    Ok(found)
}

/// One read inside a read transaction (SQLite's path).
async fn balance_at_in(
    txn: &DatabaseTransaction,
    read: &PastRead,
) -> Result<Option<HistoricalBalance>, LedgerError> {
    let (id, t) = (read.balance_id.as_str(), read.at);
    let Some(bases) = read_bases(txn, id, t).await? else {
        return Ok(None);
    };
    let currency = bases.currency.clone();
    let base = if read.from_source {
        Base::Zero
    } else {
        bases.nearest(t, Utc::now())
    };
    let totals = match base {
        Base::Zero => sum_range(txn, id, None, Some(t)).await?,
        Base::Before(at, totals) => more(totals, sum_range(txn, id, Some(at), Some(t)).await?),
        Base::After(at, totals) => less(totals, sum_range(txn, id, Some(t), Some(at)).await?),
        Base::Current(totals) => less(totals, sum_range(txn, id, Some(t), None).await?),
    };
    Ok(Some(HistoricalBalance {
        balance_id: id.to_owned(),
        currency,
        totals,
    }))
}

fn more(mut totals: Totals, later: Totals) -> Totals {
    totals.credit += later.credit;
    totals.debit += later.debit;
    totals
}

fn less(mut totals: Totals, later: Totals) -> Totals {
    totals.credit -= later.credit;
    totals.debit -= later.debit;
    totals
}

/// A balance's entries read by one pass, in effective-time order, and whether a side was cut
/// at `entries_per_side_max` (then only entries before `horizon` are complete).
#[derive(Default)]
struct ReadEntries {
    entries: Vec<Entry>,
    horizon: Option<DateTime<Utc>>,
}

/// Plans one balance's snapshots from what was read. Returns them, and the entries left
/// after the last one with whether more are unread.
async fn plan_balance(
    txn: &DatabaseTransaction,
    balance_id: &str,
    start_at: Option<DateTime<Utc>>,
    start: Totals,
    read: ReadEntries,
    limits: SnapshotLimits,
    cutoff: DateTime<Utc>,
) -> Result<(Vec<PlannedSnapshot>, (u64, bool)), LedgerError> {
    let ReadEntries {
        mut entries,
        horizon,
    } = read;
    entries.sort_by_key(|e| e.at);
    let truncated = horizon.is_some();
    let horizon = horizon.unwrap_or(cutoff);
    if truncated {
        // Entries at the horizon itself may be cut: keep only those strictly before it.
        entries.retain(|e| e.at < horizon);
        if entries.is_empty() {
            // More entries share one time than a pass reads: that time's totals at once.
            let mut totals = start;
            let later = sum_range(txn, balance_id, start_at, Some(horizon)).await?;
            totals.credit += later.credit;
            totals.debit += later.debit;
            return Ok((
                vec![PlannedSnapshot {
                    at: horizon,
                    totals,
                }],
                (0, true),
            ));
        }
    }
    let planned = plan_snapshots(start, &entries, limits.every, horizon);
    let covered_until = planned.last().map(|p| p.at);
    let remaining = entries
        .iter()
        .filter(|e| covered_until.is_none_or(|at| e.at > at))
        .count() as u64;
    Ok((planned, (remaining, truncated)))
}

/// Locks the balances that no commit holds now (id order; `SKIP LOCKED`: the pass never waits
/// for a commit, and a commit waits for it only while its few statements run), then reads
/// each locked one's newest snapshot in a statement of its own: a statement sees the
/// database as it was when it began, so one that had waited for a lock could still see a
/// snapshot that the commit it waited for deleted. Returns the locked ids, in order.
async fn lock_and_read_newest(
    txn: &DatabaseTransaction,
    balance_ids: &[String],
) -> Result<(Vec<String>, HashMap<String, (DateTime<Utc>, Totals)>), DbErr> {
    let lock = format!(
        "SELECT b.balance_id {}",
        probe(
            "unnest(CAST($1 AS text[])) AS wanted(id)",
            "b.balance_id",
            "balances AS b",
            "b.balance_id = wanted.id",
            "FOR NO KEY UPDATE SKIP LOCKED",
        )
    );
    let all = bind(text_array(balance_ids.iter().map(|id| Some(id.as_str()))));
    let mut locked: Vec<String> = txn
        .query_all_raw(statement(&lock, vec![all]))
        .await?
        .iter()
        .map(|row| row.try_get("", "balance_id"))
        .collect::<Result<_, _>>()?;
    // The caller looks ids up in it; the rows' order is the array's, which SQL does not promise.
    locked.sort_unstable();
    locked.dedup();
    let ids = || bind(text_array(locked.iter().map(|id| Some(id.as_str()))));
    let sql = "SELECT wanted.id AS balance_id, s.snapshot_time, \
               CAST(s.credit_balance AS text) AS credit, CAST(s.debit_balance AS text) AS debit \
               FROM unnest(CAST($1 AS text[])) AS wanted(id) CROSS JOIN LATERAL \
               (SELECT snapshot_time, credit_balance, debit_balance FROM balance_snapshots \
               WHERE balance_id = wanted.id ORDER BY snapshot_time DESC LIMIT 1) AS s";
    let rows = txn.query_all_raw(statement(sql, vec![ids()])).await?;
    let mut newest = HashMap::with_capacity(rows.len());
    for row in &rows {
        let totals = Totals {
            credit: integer(row, "credit")?,
            debit: integer(row, "debit")?,
        };
        newest.insert(
            row.try_get("", "balance_id")?,
            (row.try_get("", "snapshot_time")?, totals),
        );
    }
    Ok((locked, newest))
}

/// The APPLIED entries of each balance after its newest snapshot and up to `cutoff`, at most
/// `entries_per_side_max` a side, in effective-time order.
async fn read_entries(
    txn: &DatabaseTransaction,
    balance_ids: &[String],
    newest: &HashMap<String, (DateTime<Utc>, Totals)>,
    cutoff: DateTime<Utc>,
    limits: SnapshotLimits,
) -> Result<HashMap<String, ReadEntries>, DbErr> {
    let backend = txn.get_database_backend();
    let limit = limits.entries_per_side_max;
    let mut read: HashMap<String, ReadEntries> = HashMap::with_capacity(balance_ids.len());
    let mut take = |id: String, side: &str, at: DateTime<Utc>, amount: BigInt| {
        let side = if side == "c" {
            EntrySide::Credit
        } else {
            EntrySide::Debit
        };
        read.entry(id)
            .or_default()
            .entries
            .push(Entry { at, side, amount });
    };
    let side_query = |column: &str, side: &str, since: &str, cut: &str, limit: &str| {
        format!(
            "(SELECT '{side}' AS side, {EFFECTIVE} AS at, CAST(precise_amount AS text) AS amount \
             FROM transactions WHERE {column} = {{id}} AND status = 'APPLIED' \
             AND {EFFECTIVE} > {since} AND {EFFECTIVE} <= {cut} ORDER BY {EFFECTIVE} LIMIT {limit})"
        )
    };
    if backend == DbBackend::Postgres {
        let since = "COALESCE(w.since, CAST('-infinity' AS timestamptz))";
        let sides = [
            side_query("destination", "c", since, "$3", "$4"),
            side_query("source", "d", since, "$3", "$4"),
        ]
        .join(" UNION ALL ")
        .replace("{id}", "w.id");
        let sql = format!(
            "SELECT w.id, e.side, e.at, e.amount \
             FROM unnest(CAST($1 AS text[]), CAST($2 AS timestamptz[])) AS w(id, since) \
             CROSS JOIN LATERAL ({sides}) AS e"
        );
        let since: Vec<Option<String>> = balance_ids
            .iter()
            .map(|id| newest.get(id).map(|(at, _)| rfc3339(at)))
            .collect();
        let values = vec![
            bind(text_array(balance_ids.iter().map(|id| Some(id.as_str())))),
            bind(text_array(since.iter().map(|s| s.as_deref()))),
            cutoff.into(),
            (limit as i64).into(),
        ];
        for row in txn.query_all_raw(statement(&sql, values)).await? {
            let side: String = row.try_get("", "side")?;
            take(
                row.try_get("", "id")?,
                &side,
                time(&row, "at", backend)?,
                integer(&row, "amount")?,
            );
        }
    } else {
        for id in balance_ids {
            let since = newest.get(id).map(|(at, _)| *at);
            // SQLite takes ORDER BY and LIMIT in a compound query's members only inside
            // subqueries.
            let sides = [("destination", "c"), ("source", "d")]
                .map(|(column, side)| {
                    let since_bound = if since.is_some() { "?" } else { "''" };
                    let query = side_query(column, side, since_bound, "?", "?");
                    format!(
                        "SELECT side, at, amount FROM {}",
                        query.replace("{id}", "?")
                    )
                })
                .join(" UNION ALL ");
            let mut values: Vec<Value> = Vec::new();
            for _ in 0..2 {
                values.push(id.clone().into());
                if let Some(since) = since {
                    values.push(since.into());
                }
                values.push(cutoff.into());
                values.push((limit as i64).into());
            }
            for row in txn
                .query_all_raw(Statement::from_sql_and_values(backend, &sides, values))
                .await?
            {
                let side: String = row.try_get("", "side")?;
                take(
                    id.clone(),
                    &side,
                    time(&row, "at", backend)?,
                    integer(&row, "amount")?,
                );
            }
        }
    }
    // A side that filled its limit was cut: its last time bounds what is complete.
    for entries in read.values_mut() {
        for side in [EntrySide::Credit, EntrySide::Debit] {
            let of_side: Vec<&Entry> = entries.entries.iter().filter(|e| e.side == side).collect();
            if of_side.len() as u64 >= limit {
                let last = of_side.iter().map(|e| e.at).max();
                entries.horizon = match (entries.horizon, last) {
                    (Some(h), Some(l)) => Some(h.min(l)),
                    (h, l) => h.or(l),
                };
            }
        }
    }
    Ok(read)
}

async fn insert_snapshots(
    txn: &DatabaseTransaction,
    planned: &[(String, PlannedSnapshot)],
) -> Result<(), DbErr> {
    if planned.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    if txn.get_database_backend() == DbBackend::Postgres {
        let column = |f: &dyn Fn(&(String, PlannedSnapshot)) -> String| {
            let values: Vec<String> = planned.iter().map(f).collect();
            bind(text_array(values.iter().map(|v| Some(v.as_str()))))
        };
        let sql = "INSERT INTO balance_snapshots \
             (balance_id, snapshot_time, credit_balance, debit_balance, balance, created_at) \
             SELECT id, at, credit, debit, credit - debit, $5 FROM unnest(CAST($1 AS text[]), \
             CAST($2 AS timestamptz[]), CAST($3 AS numeric[]), CAST($4 AS numeric[])) \
             AS v(id, at, credit, debit) ON CONFLICT DO NOTHING";
        let values = vec![
            column(&|(id, _)| id.clone()),
            column(&|(_, p)| rfc3339(&p.at)),
            column(&|(_, p)| p.totals.credit.to_string()),
            column(&|(_, p)| p.totals.debit.to_string()),
            now.into(),
        ];
        txn.execute_raw(statement(sql, values)).await?;
        return Ok(());
    }
    let models = planned.iter().map(|(id, p)| balance_snapshot::ActiveModel {
        balance_id: sea_orm::ActiveValue::Set(id.clone()),
        snapshot_time: sea_orm::ActiveValue::Set(p.at),
        credit_balance: sea_orm::ActiveValue::Set(Money(p.totals.credit.clone())),
        debit_balance: sea_orm::ActiveValue::Set(Money(p.totals.debit.clone())),
        balance: sea_orm::ActiveValue::Set(Money(p.totals.balance())),
        created_at: sea_orm::ActiveValue::Set(now),
    });
    let models: Vec<_> = models.collect();
    for chunk in models.chunks(SNAPSHOT_INSERT_ROWS_MAX) {
        balance_snapshot::Entity::insert_many(chunk.to_vec())
            .on_conflict_do_nothing()
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Snapshots per multi-row INSERT on SQLite (6 columns: well under its bind limit).
const SNAPSHOT_INSERT_ROWS_MAX: usize = 500;

/// Deletes the snapshots of each balance at or after its time (a row that commits with an
/// effective time at or before them; see the module docs).
pub(crate) async fn invalidate_snapshots<C: ConnectionTrait>(
    db: &C,
    late: &[(String, DateTime<Utc>)],
) -> Result<(), DbErr> {
    if late.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let times: Vec<String> = late.iter().map(|(_, at)| rfc3339(at)).collect();
        let sql = "DELETE FROM balance_snapshots AS s USING unnest(CAST($1 AS text[]), \
                   CAST($2 AS timestamptz[])) AS v(id, at) \
                   WHERE s.balance_id = v.id AND s.snapshot_time >= v.at";
        let values = vec![
            bind(text_array(late.iter().map(|(id, _)| Some(id.as_str())))),
            bind(text_array(times.iter().map(|t| Some(t.as_str())))),
        ];
        db.execute_raw(statement(sql, values)).await?;
        return Ok(());
    }
    for (id, at) in late {
        balance_snapshot::Entity::delete_many()
            .filter(balance_snapshot::Column::BalanceId.eq(id.clone()))
            .filter(balance_snapshot::Column::SnapshotTime.gte(*at))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Metadata key that asks for a balance's reconstruction, and the value that does (Blnk's).
pub const RECONSTRUCTION_KEY: &str = "BLNK_RUN_RECONCILIATION";
pub const RECONSTRUCTION_FROM_SOURCE: &str = "SOURCE";
/// Metadata key the reconstruction's report is written under (Blnk's).
pub const RECONSTRUCTION_RESULT_KEY: &str = "BLNK_RECONCILIATION_RESULT";

/// A reconstructed balance: its merged `meta_data` and its new state.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    pub meta_data: serde_json::Value,
    pub state: super::BalanceState,
}

impl Store {
    /// Blnk's balance reconstruction: sets the balance's credit and debit to the sums of its
    /// APPLIED transactions (inflight amounts are kept), merges `update` (without the request
    /// key) into its `meta_data` and records the report under [`RECONSTRUCTION_RESULT_KEY`]
    /// (previous and recalculated amounts, the difference, as strings), in one transaction
    /// with the balance row locked. The version moves only when the amounts do.
    ///
    /// The caller is the balance's actor (`Ledger::update_metadata`), so this process reserves
    /// nothing against the balance meanwhile; other processes are held off by the row lock and
    /// by the guarded updates.
    pub async fn reconstruct_balance(
        &self,
        balance_id: &str,
        update: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Reconstruction, LedgerError> {
        use crate::domain::identity::merge_meta;
        use serde_json::{json, Value};
        let balance_id = balance_id.to_owned();
        let events = self.events();
        self.run(move |db| async move {
            let txn = db.begin().await?;
            let mut select = balance::Entity::find_by_id(balance_id.clone());
            if txn.get_database_backend() == DbBackend::Postgres {
                select = select.lock_exclusive();
            }
            let row = select
                .one(&txn)
                .await?
                .ok_or_else(|| LedgerError::BalanceNotFound(balance_id.clone()))?;
            let sums = sum_range(&txn, &balance_id, None, None).await?;
            let (previous_credit, previous_debit) =
                (row.credit_balance.0.clone(), row.debit_balance.0.clone());
            // What the row held (Blnk's `OLD.balance`), even when it disagrees with its
            // credit and debit: the report then shows that drift, and this corrects it.
            let previous_balance = row.balance.0.clone();
            let report = json!({
                "executed_at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
                "previous_debit": previous_debit.to_string(),
                "previous_credit": previous_credit.to_string(),
                "previous_balance": previous_balance.to_string(),
                "recalculated_debit": sums.debit.to_string(),
                "recalculated_credit": sums.credit.to_string(),
                "recalculated_balance": sums.balance().to_string(),
                "difference": (sums.balance() - &previous_balance).to_string(),
            });
            let mut meta = merge_meta(row.meta_data.clone(), &update, &[RECONSTRUCTION_KEY]);
            if let Value::Object(map) = &mut meta {
                map.remove(RECONSTRUCTION_KEY);
                map.insert(RECONSTRUCTION_RESULT_KEY.to_owned(), report);
            }
            let changed = sums.credit != previous_credit || sums.debit != previous_debit;
            let version = row.version + i64::from(changed);
            let money = |value: BigInt| sea_orm::sea_query::Expr::val(Money(value));
            balance::Entity::update_many()
                .col_expr(balance::Column::CreditBalance, money(sums.credit.clone()))
                .col_expr(balance::Column::DebitBalance, money(sums.debit.clone()))
                .col_expr(balance::Column::Balance, money(sums.balance()))
                .col_expr(
                    balance::Column::Version,
                    sea_orm::sea_query::Expr::val(version),
                )
                .col_expr(
                    balance::Column::MetaData,
                    sea_orm::sea_query::Expr::val(Some(meta.clone())),
                )
                .filter(balance::Column::BalanceId.eq(balance_id.clone()))
                .exec(&txn)
                .await?;
            super::changes::record(
                &txn,
                events.as_deref(),
                super::changes::Change::BalanceReconstructed(&balance_id),
            )
            .await?;
            txn.commit().await?;
            let state = super::BalanceState {
                balance_id,
                amounts: crate::domain::BalanceAmounts {
                    credit: sums.credit,
                    debit: sums.debit,
                    inflight_credit: row.inflight_credit_balance.0,
                    inflight_debit: row.inflight_debit_balance.0,
                },
                version,
            };
            Ok(Reconstruction {
                meta_data: meta,
                state,
            })
        })
        .await
    }
}
