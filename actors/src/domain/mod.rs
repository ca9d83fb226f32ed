//! Pure domain types and rules: no I/O.

pub mod access;
pub mod amount;
pub mod balance;
pub mod batch;
pub mod distribution;
pub mod history;
pub mod hook;
pub mod identity;
pub mod ids;
pub mod inflight;
pub mod monitor;
pub mod pii;
pub mod transaction;

pub use amount::{Amount, AmountError, Precision};
pub use balance::{BalanceAmounts, BalanceDelta, Floor, GuardedChange};
pub use transaction::{TransactionRecord, TransactionStatus};
