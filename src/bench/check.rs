//! The final balance check: what every balance of a run must hold, given the transfers the
//! server accepted and applied, compared with what the server reports.

use serde::Serialize;
use std::collections::BTreeMap;

/// The two figures checked per balance: `balance` and `inflight_balance`, in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    pub balance: i128,
    pub inflight: i128,
}

/// What each balance of a run should hold, keyed by balance id (or by indicator for
/// `@indicator` balances).
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    pub balances: BTreeMap<String, Amounts>,
}

impl Expectation {
    fn entry(&mut self, key: &str) -> &mut Amounts {
        if !self.balances.contains_key(key) {
            self.balances.insert(key.to_owned(), Amounts::default());
        }
        self.balances.get_mut(key).expect("just inserted")
    }

    /// Makes sure `key` is checked even if nothing moves it.
    pub fn touch(&mut self, key: &str) {
        self.entry(key);
    }

    /// An applied transfer of `amount` from `source` to `destination`.
    pub fn apply(&mut self, source: &str, destination: &str, amount: i128) {
        self.entry(source).balance -= amount;
        self.entry(destination).balance += amount;
    }

    /// A hold (inflight) of `amount` from `source` to `destination`, not committed.
    pub fn hold(&mut self, source: &str, destination: &str, amount: i128) {
        self.entry(source).inflight -= amount;
        self.entry(destination).inflight += amount;
    }
}

/// One balance whose stored figures differ from the expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub balance: String,
    pub expected: Amounts,
    /// `None`: the server does not have this balance.
    pub actual: Option<Amounts>,
}

/// How the server's counts compare with what the tool saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Transfers the tool expects applied (accepted and not rejected by the worker).
    pub expected_applied: u64,
    /// APPLIED rows of this run, read back from the server.
    pub applied_read_back: u64,
    /// REJECTED rows of this run (queued path), read back from the server.
    pub rejected_read_back: u64,
    /// Queued transfers with no outcome yet when the tool stopped waiting.
    pub pending: u64,
    /// Requests whose outcome the tool could not establish.
    pub unresolved: u64,
}

/// Mismatches listed in full; beyond this only the count is kept.
const MISMATCHES_LISTED_MAX: usize = 20;

/// The verdict of the final balance check.
#[derive(Debug, Clone, Serialize)]
pub struct BalanceCheck {
    pub passed: bool,
    /// Balances compared (expected ∪ found).
    pub balances_checked: u64,
    pub mismatch_count: u64,
    pub mismatches: Vec<Mismatch>,
    /// Σ `balance` over the run's balances and its funding source (must be 0).
    pub sum_balance: i128,
    /// Σ `inflight_balance` over the same (must be 0).
    pub sum_inflight: i128,
    pub counts: Counts,
    /// Why the check failed, in words; empty when it passed.
    pub failures: Vec<String>,
}

impl BalanceCheck {
    /// A check that could not be carried out.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            passed: false,
            balances_checked: 0,
            mismatch_count: 0,
            mismatches: Vec::new(),
            sum_balance: 0,
            sum_inflight: 0,
            counts: Counts::default(),
            failures: vec![reason.into()],
        }
    }
}

/// Compares the expectation with the balances found on the server (`actual`: every balance
/// of the run the server lists, keyed like the expectation). A balance the tool does not expect
/// must be zero (e.g. an `@indicator` created by a refused request); an expected non-zero balance
/// must exist. The sums over what the server holds must be zero.
pub fn compare(
    expected: &Expectation,
    actual: &BTreeMap<String, Amounts>,
    counts: Counts,
) -> BalanceCheck {
    let mut mismatches = Vec::new();
    let mut mismatch_count = 0u64;
    let mut checked = 0u64;
    let mut record = |mismatch: Mismatch| {
        mismatch_count += 1;
        if mismatches.len() < MISMATCHES_LISTED_MAX {
            mismatches.push(mismatch);
        }
    };
    for (key, want) in &expected.balances {
        checked += 1;
        match actual.get(key) {
            Some(have) if have == want => {}
            Some(have) => record(Mismatch {
                balance: key.clone(),
                expected: *want,
                actual: Some(*have),
            }),
            None if *want == Amounts::default() => {}
            None => record(Mismatch {
                balance: key.clone(),
                expected: *want,
                actual: None,
            }),
        }
    }
    for (key, have) in actual {
        if expected.balances.contains_key(key) {
            continue;
        }
        checked += 1;
        if *have != Amounts::default() {
            record(Mismatch {
                balance: key.clone(),
                expected: Amounts::default(),
                actual: Some(*have),
            });
        }
    }
    let sum_balance: i128 = actual.values().map(|a| a.balance).sum();
    let sum_inflight: i128 = actual.values().map(|a| a.inflight).sum();
    let mut failures = Vec::new();
    if mismatch_count > 0 {
        failures.push(format!(
            "{mismatch_count} balance(s) differ from what the run's transfers imply"
        ));
    }
    if sum_balance != 0 || sum_inflight != 0 {
        failures.push(format!(
            "the run's balances and funding source do not sum to zero (balance {sum_balance}, inflight {sum_inflight})"
        ));
    }
    if counts.unresolved > 0 {
        failures.push(format!(
            "{} request(s) have an unknown outcome",
            counts.unresolved
        ));
    }
    if counts.pending > 0 {
        failures.push(format!(
            "{} queued transfer(s) were still unprocessed when the tool stopped waiting",
            counts.pending
        ));
    }
    if counts.applied_read_back != counts.expected_applied {
        failures.push(format!(
            "the server holds {} APPLIED transfer(s) for this run, the tool expects {}",
            counts.applied_read_back, counts.expected_applied
        ));
    }
    BalanceCheck {
        passed: failures.is_empty(),
        balances_checked: checked,
        mismatch_count,
        mismatches,
        sum_balance,
        sum_inflight,
        counts,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(balance: i128) -> Amounts {
        Amounts {
            balance,
            inflight: 0,
        }
    }

    fn counts(applied: u64) -> Counts {
        Counts {
            expected_applied: applied,
            applied_read_back: applied,
            ..Counts::default()
        }
    }

    #[test]
    fn matching_balances_pass() {
        let mut expected = Expectation::default();
        expected.apply("@fund", "a", 100);
        expected.apply("a", "b", 30);
        let actual = BTreeMap::from([
            ("@fund".to_owned(), amounts(-100)),
            ("a".to_owned(), amounts(70)),
            ("b".to_owned(), amounts(30)),
        ]);
        let check = compare(&expected, &actual, counts(1));
        assert!(check.passed, "{:?}", check.failures);
        assert_eq!(check.balances_checked, 3);
    }

    #[test]
    fn a_moved_unit_fails_and_is_named() {
        let mut expected = Expectation::default();
        expected.apply("@fund", "a", 100);
        expected.touch("b");
        let actual = BTreeMap::from([
            ("@fund".to_owned(), amounts(-100)),
            ("a".to_owned(), amounts(99)),
            ("b".to_owned(), amounts(1)),
        ]);
        let check = compare(&expected, &actual, counts(0));
        assert!(!check.passed);
        assert_eq!(check.mismatch_count, 2);
        assert_eq!(check.sum_balance, 0);
    }

    #[test]
    fn unexpected_nonzero_missing_and_sums_fail() {
        let expected = Expectation::default();
        let actual = BTreeMap::from([("x".to_owned(), amounts(5))]);
        let check = compare(&expected, &actual, counts(0));
        assert!(!check.passed);
        assert_eq!(check.sum_balance, 5);
        assert_eq!(check.failures.len(), 2);

        let mut expected = Expectation::default();
        expected.apply("s", "d", 1);
        let check = compare(&expected, &BTreeMap::new(), counts(1));
        assert_eq!(check.mismatch_count, 2);
        assert!(check.mismatches.iter().all(|m| m.actual.is_none()));
    }

    #[test]
    fn count_disagreements_fail() {
        let check = compare(
            &Expectation::default(),
            &BTreeMap::new(),
            Counts {
                expected_applied: 3,
                applied_read_back: 2,
                pending: 1,
                ..Counts::default()
            },
        );
        assert!(!check.passed);
        assert_eq!(check.failures.len(), 2);
    }
}
