//! Inflight (two-phase) holds: what a commit or a void may move.
//!
//! A hold of `x` moves `x` into the source's inflight debit and the destination's inflight
//! credit. Commits move parts of it into the real debit and credit, until nothing remains;
//! a void returns the remainder. A hold is INFLIGHT while something remains and no void
//! happened, COMMITTED when commits took all of it, VOID after a void.

use super::balance::{BalanceDelta, GuardedChange};
use bigdecimal::num_bigint::{BigInt, Sign};
use bigdecimal::Zero;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    Inflight,
    Committed,
    Voided,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inflight => "INFLIGHT",
            Self::Committed => "COMMITTED",
            Self::Voided => "VOID",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Inflight, Self::Committed, Self::Voided]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldAction {
    /// `None` commits everything that remains.
    Commit(Option<BigInt>),
    Void,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldRefusal {
    #[error("cannot commit. Transaction already committed")]
    AlreadyCommitted,
    #[error("transaction has already been voided")]
    AlreadyVoided,
    #[error("cannot commit more than the remaining amount {remaining}")]
    CommitExceeds { remaining: BigInt },
    #[error("commit amount must be greater than zero")]
    NotPositive,
}

/// The amount an action moves and the hold's state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldOutcome {
    pub amount: BigInt,
    pub remaining_after: BigInt,
    pub state_after: HoldState,
}

pub fn decide(
    state: HoldState,
    remaining: &BigInt,
    action: &HoldAction,
) -> Result<HoldOutcome, HoldRefusal> {
    match state {
        HoldState::Voided => return Err(HoldRefusal::AlreadyVoided),
        HoldState::Committed => return Err(HoldRefusal::AlreadyCommitted),
        HoldState::Inflight if remaining.is_zero() => return Err(HoldRefusal::AlreadyCommitted),
        HoldState::Inflight => {}
    }
    match action {
        HoldAction::Void => Ok(HoldOutcome {
            amount: remaining.clone(),
            remaining_after: BigInt::zero(),
            state_after: HoldState::Voided,
        }),
        HoldAction::Commit(amount) => {
            let amount = amount.clone().unwrap_or_else(|| remaining.clone());
            if amount.sign() != Sign::Plus {
                return Err(HoldRefusal::NotPositive);
            }
            if &amount > remaining {
                return Err(HoldRefusal::CommitExceeds {
                    remaining: remaining.clone(),
                });
            }
            let remaining_after = remaining - &amount;
            let state_after = if remaining_after.is_zero() {
                HoldState::Committed
            } else {
                HoldState::Inflight
            };
            Ok(HoldOutcome {
                amount,
                remaining_after,
                state_after,
            })
        }
    }
}

/// The balance changes of opening a hold (the source's debit is checked against its floor
/// by the caller).
pub fn hold_deltas(amount: &BigInt) -> (BalanceDelta, BalanceDelta) {
    (
        BalanceDelta {
            inflight_debit: amount.clone(),
            ..BalanceDelta::default()
        },
        BalanceDelta {
            inflight_credit: amount.clone(),
            ..BalanceDelta::default()
        },
    )
}

/// The balance changes of a commit or a void of `amount`: never checked against a floor,
/// since the hold already took the funds out of `available`.
pub fn action_changes(
    action: &HoldAction,
    source: &str,
    destination: &str,
    amount: &BigInt,
) -> Vec<(String, GuardedChange)> {
    let (mut source_delta, mut destination_delta) =
        (BalanceDelta::default(), BalanceDelta::default());
    source_delta.inflight_debit = -amount.clone();
    destination_delta.inflight_credit = -amount.clone();
    if matches!(action, HoldAction::Commit(_)) {
        source_delta.debit = amount.clone();
        destination_delta.credit = amount.clone();
    }
    vec![
        (
            source.to_owned(),
            GuardedChange {
                delta: source_delta,
                floor: None,
            },
        ),
        (
            destination.to_owned(),
            GuardedChange {
                delta: destination_delta,
                floor: None,
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> BigInt {
        BigInt::from(v)
    }

    #[test]
    fn partial_commits_then_void_return_the_rest() {
        let first = decide(
            HoldState::Inflight,
            &int(100),
            &HoldAction::Commit(Some(int(30))),
        )
        .unwrap();
        assert_eq!(
            (
                first.amount.clone(),
                first.remaining_after.clone(),
                first.state_after
            ),
            (int(30), int(70), HoldState::Inflight)
        );
        let void = decide(first.state_after, &first.remaining_after, &HoldAction::Void).unwrap();
        assert_eq!(
            (void.amount, void.state_after),
            (int(70), HoldState::Voided)
        );
        assert_eq!(
            decide(HoldState::Voided, &int(0), &HoldAction::Void),
            Err(HoldRefusal::AlreadyVoided)
        );
    }

    #[test]
    fn commits_cannot_exceed_what_remains() {
        assert_eq!(
            decide(
                HoldState::Inflight,
                &int(10),
                &HoldAction::Commit(Some(int(11)))
            ),
            Err(HoldRefusal::CommitExceeds { remaining: int(10) })
        );
        let all = decide(HoldState::Inflight, &int(10), &HoldAction::Commit(None)).unwrap();
        assert_eq!(all.state_after, HoldState::Committed);
        assert_eq!(
            decide(HoldState::Committed, &int(0), &HoldAction::Commit(None)),
            Err(HoldRefusal::AlreadyCommitted)
        );
    }

    #[test]
    fn commit_and_void_changes_are_balanced() {
        for action in [HoldAction::Commit(None), HoldAction::Void] {
            let changes = action_changes(&action, "s", "d", &int(5));
            let mut total = BalanceDelta::default();
            for (_, change) in &changes {
                total.add(&change.delta);
            }
            assert_eq!(total.credit, total.debit);
            assert_eq!(total.inflight_credit, total.inflight_debit);
        }
    }
}
