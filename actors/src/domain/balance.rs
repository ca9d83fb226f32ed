//! Balance arithmetic: the six amounts, availability, overdraft floors and the batch guard.
//!
//! `balance = credit − debit`, `inflight = inflight_credit − inflight_debit`, and the funds a
//! debit may use are `available = balance − inflight_debit` (Blnk's rule; credits are never
//! checked). A balance with a precision takes transfers of that precision only.

use super::Precision;
use crate::LedgerError;
use bigdecimal::num_bigint::BigInt;
use bigdecimal::Zero;

/// The stored amounts of one balance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceAmounts {
    pub credit: BigInt,
    pub debit: BigInt,
    pub inflight_credit: BigInt,
    pub inflight_debit: BigInt,
}

/// A change to a balance's amounts; every field is added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceDelta {
    pub credit: BigInt,
    pub debit: BigInt,
    pub inflight_credit: BigInt,
    pub inflight_debit: BigInt,
}

impl BalanceAmounts {
    pub fn balance(&self) -> BigInt {
        &self.credit - &self.debit
    }

    pub fn inflight_balance(&self) -> BigInt {
        &self.inflight_credit - &self.inflight_debit
    }

    pub fn available(&self) -> BigInt {
        self.balance() - &self.inflight_debit
    }

    pub fn apply(&mut self, delta: &BalanceDelta) {
        self.credit += &delta.credit;
        self.debit += &delta.debit;
        self.inflight_credit += &delta.inflight_credit;
        self.inflight_debit += &delta.inflight_debit;
    }
}

impl BalanceDelta {
    pub fn debit(amount: &BigInt) -> Self {
        Self {
            debit: amount.clone(),
            ..Self::default()
        }
    }

    pub fn credit(amount: &BigInt) -> Self {
        Self {
            credit: amount.clone(),
            ..Self::default()
        }
    }

    /// How this change moves `available`.
    pub fn available_change(&self) -> BigInt {
        &self.credit - &self.debit - &self.inflight_debit
    }

    pub fn add(&mut self, other: &BalanceDelta) {
        self.credit += &other.credit;
        self.debit += &other.debit;
        self.inflight_credit += &other.inflight_credit;
        self.inflight_debit += &other.inflight_debit;
    }

    pub fn is_zero(&self) -> bool {
        self.credit.is_zero()
            && self.debit.is_zero()
            && self.inflight_credit.is_zero()
            && self.inflight_debit.is_zero()
    }
}

/// How low `available` may go after a debit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Floor {
    /// `allow_overdraft` without a limit.
    Unlimited,
    /// Not below this value (0, or −limit with `overdraft_limit`).
    AtLeast(BigInt),
}

impl Floor {
    /// Blnk's rule: a positive limit caps the overdraft (even without `allow_overdraft`);
    /// `allow_overdraft` alone is unlimited; otherwise no overdraft.
    pub fn for_debit(allow_overdraft: bool, overdraft_limit_minor: Option<&BigInt>) -> Self {
        match overdraft_limit_minor {
            Some(limit) if limit > &BigInt::zero() => Floor::AtLeast(-limit.clone()),
            _ if allow_overdraft => Floor::Unlimited,
            _ => Floor::AtLeast(BigInt::zero()),
        }
    }

    pub fn permits(&self, available_after: &BigInt) -> bool {
        match self {
            Floor::Unlimited => true,
            Floor::AtLeast(floor) => available_after >= floor,
        }
    }

    pub fn is_overdraft_limit(&self) -> bool {
        matches!(self, Floor::AtLeast(floor) if floor < &BigInt::zero())
    }
}

/// One change to a balance inside a batch, in arrival order; `floor` is set on debits.
#[derive(Debug, Clone)]
pub struct GuardedChange {
    pub delta: BalanceDelta,
    pub floor: Option<Floor>,
}

/// A balance with a precision takes transfers of that precision only; one without (an
/// `@indicator` balance) takes any.
pub fn check_precision(
    balance_id: &str,
    stored: Option<&Precision>,
    given: &Precision,
) -> Result<(), LedgerError> {
    match stored {
        Some(expected) if expected != given => Err(LedgerError::PrecisionMismatch {
            balance_id: balance_id.to_owned(),
            expected: expected.to_string(),
            given: given.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdraft_floor_follows_blnk() {
        assert_eq!(Floor::for_debit(true, None), Floor::Unlimited);
        assert_eq!(
            Floor::for_debit(false, None),
            Floor::AtLeast(BigInt::zero())
        );
        let limit = BigInt::from(500);
        assert_eq!(
            Floor::for_debit(false, Some(&limit)),
            Floor::AtLeast(BigInt::from(-500))
        );
        assert_eq!(
            Floor::for_debit(true, Some(&limit)),
            Floor::AtLeast(BigInt::from(-500))
        );
    }
}
