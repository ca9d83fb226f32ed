//! A balance's past: the replay of its APPLIED transactions by effective time
//! (`COALESCE(effective_date, created_at)`), and where snapshots of it are taken.
//!
//! A snapshot at `T` holds the credit and debit totals of every APPLIED transaction with an
//! effective time at or before `T`. The balance at `t` is then any snapshot plus the entries
//! in `(T, t]` (a snapshot before `t`), or minus those in `(t, T]` (a snapshot after `t`; the
//! balance row itself is one at the end of time). [`plan_snapshots`] places them every
//! `every` entries and at the last entry of each UTC day, never between two entries of the
//! same time, so a snapshot never splits what `t` must include.

use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, Utc};

/// The times a ledger stores and compares: RFC 3339's years 0001 to 9999, in UTC (an offset
/// can move a valid text out of them). PostgreSQL has no year 0, and SQLite compares times
/// as text, which a fifth year digit would put before every other time.
pub fn storable_times() -> std::ops::RangeInclusive<DateTime<Utc>> {
    use chrono::TimeZone;
    let earliest = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
    let latest = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
        + chrono::Duration::nanoseconds(999_999_999);
    earliest..=latest
}

/// Which side of the balance an entry moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrySide {
    /// The balance was the destination.
    Credit,
    /// The balance was the source.
    Debit,
}

/// One APPLIED transaction as a balance's history sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub side: EntrySide,
    pub amount: BigInt,
}

/// Credit and debit totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub credit: BigInt,
    pub debit: BigInt,
}

impl Totals {
    pub fn balance(&self) -> BigInt {
        &self.credit - &self.debit
    }

    pub fn add(&mut self, entry: &Entry) {
        match entry.side {
            EntrySide::Credit => self.credit += &entry.amount,
            EntrySide::Debit => self.debit += &entry.amount,
        }
    }

    pub fn subtract(&mut self, entry: &Entry) {
        match entry.side {
            EntrySide::Credit => self.credit -= &entry.amount,
            EntrySide::Debit => self.debit -= &entry.amount,
        }
    }
}

/// The totals of the entries at or before `t` (the definition every read must agree with).
pub fn replay<'a>(entries: impl IntoIterator<Item = &'a Entry>, t: DateTime<Utc>) -> Totals {
    let mut totals = Totals::default();
    for entry in entries.into_iter().filter(|e| e.at <= t) {
        totals.add(entry);
    }
    totals
}

/// A snapshot to store: the totals as of `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSnapshot {
    pub at: DateTime<Utc>,
    pub totals: Totals,
}

/// The snapshots to take after one at `start` (`None`: from the beginning, zero totals),
/// given the entries after it in effective-time order, all at or before `cutoff`: one after
/// every `every` entries and one at the last entry of each UTC day that has ended by the
/// cutoff, never between entries of the same time.
pub fn plan_snapshots(
    start: Totals,
    entries: &[Entry],
    every: usize,
    cutoff: DateTime<Utc>,
) -> Vec<PlannedSnapshot> {
    assert!(every > 0);
    debug_assert!(entries.windows(2).all(|w| w[0].at <= w[1].at));
    let mut planned = Vec::new();
    let mut totals = start;
    let mut since_last = 0;
    for (index, entry) in entries.iter().enumerate() {
        totals.add(entry);
        since_last += 1;
        let next = entries.get(index + 1);
        if next.is_some_and(|next| next.at == entry.at) {
            continue;
        }
        let day_ends = match next {
            Some(next) => next.at.date_naive() != entry.at.date_naive(),
            None => entry.at.date_naive() < cutoff.date_naive(),
        };
        if since_last >= every || day_ends {
            planned.push(PlannedSnapshot {
                at: entry.at,
                totals: totals.clone(),
            });
            since_last = 0;
        }
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn entry(seconds: i64, side: EntrySide, amount: i64) -> Entry {
        Entry {
            at: at(seconds),
            side,
            amount: BigInt::from(amount),
        }
    }

    #[test]
    fn snapshots_come_every_n_entries_but_never_between_equal_times() {
        let entries = vec![
            entry(1, EntrySide::Credit, 10),
            entry(2, EntrySide::Debit, 3),
            entry(2, EntrySide::Credit, 5),
            entry(3, EntrySide::Credit, 1),
        ];
        let planned = plan_snapshots(Totals::default(), &entries, 2, at(10));
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].at, at(2), "the tie at 2 s stays together");
        assert_eq!(planned[0].totals.balance(), BigInt::from(12));
    }

    #[test]
    fn the_last_entry_of_an_ended_day_is_a_snapshot() {
        let day = 86_400;
        let entries = vec![
            entry(0, EntrySide::Credit, 1),
            entry(day, EntrySide::Credit, 2),
        ];
        let planned = plan_snapshots(Totals::default(), &entries, 100, at(day + 60));
        assert_eq!(planned.len(), 1, "the second day has not ended");
        let planned = plan_snapshots(Totals::default(), &entries, 100, at(3 * day));
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[1].totals.credit, BigInt::from(3));
    }

    proptest! {
        /// Any snapshot, read forward or backward, gives the replay.
        #[test]
        fn reads_from_any_snapshot_equal_the_replay(
            raw in proptest::collection::vec((0i64..5_000, any::<bool>(), 1i64..1_000), 0..60),
            every in 1usize..8,
            t in 0i64..5_000,
        ) {
            let mut entries: Vec<Entry> = raw
                .iter()
                .map(|(s, credit, amount)| {
                    let side = if *credit { EntrySide::Credit } else { EntrySide::Debit };
                    entry(s * 60, side, *amount)
                })
                .collect();
            entries.sort_by_key(|e| e.at);
            let t = at(t * 60);
            let planned = plan_snapshots(Totals::default(), &entries, every, at(6_000 * 60));
            let expected = replay(&entries, t);
            for snapshot in &planned {
                prop_assert_eq!(&snapshot.totals, &replay(&entries, snapshot.at));
                let mut totals = snapshot.totals.clone();
                if snapshot.at <= t {
                    for e in entries.iter().filter(|e| e.at > snapshot.at && e.at <= t) {
                        totals.add(e);
                    }
                } else {
                    for e in entries.iter().filter(|e| e.at > t && e.at <= snapshot.at) {
                        totals.subtract(e);
                    }
                }
                prop_assert_eq!(&totals, &expected);
            }
        }
    }
}
