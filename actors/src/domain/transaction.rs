//! Transaction rows: statuses, the stored record and its content hash.

use super::amount::Precision;
use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Blnk's stored statuses (`COMMIT` is only transient there and never stored here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    Queued,
    Scheduled,
    Applied,
    Inflight,
    Void,
    Rejected,
}

impl TransactionStatus {
    pub const ALL: [TransactionStatus; 6] = [
        Self::Queued,
        Self::Scheduled,
        Self::Applied,
        Self::Inflight,
        Self::Void,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Scheduled => "SCHEDULED",
            Self::Applied => "APPLIED",
            Self::Inflight => "INFLIGHT",
            Self::Void => "VOID",
            Self::Rejected => "REJECTED",
        }
    }
}

impl fmt::Display for TransactionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransactionStatus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown transaction status {text}"))
    }
}

/// One immutable transaction row, as stored and as served.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionRecord {
    pub transaction_id: String,
    pub parent_transaction: Option<String>,
    pub source: String,
    pub destination: String,
    pub reference: String,
    pub precise_amount: BigInt,
    pub precision: Precision,
    pub currency: String,
    pub description: Option<String>,
    pub status: TransactionStatus,
    pub hash: String,
    pub allow_overdraft: bool,
    /// In minor units.
    pub overdraft_limit: Option<BigInt>,
    pub inflight: bool,
    pub skip_queue: bool,
    pub atomic: bool,
    pub created_at: DateTime<Utc>,
    pub effective_date: Option<DateTime<Utc>>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub inflight_expiry_date: Option<DateTime<Utc>>,
    pub inflight_commit_date: Option<DateTime<Utc>>,
    pub meta_data: Option<serde_json::Value>,
}

/// Suffix of the child row a worker writes for a queued transaction (Blnk's `<ref>_q`).
pub const QUEUED_CHILD_SUFFIX: &str = "_q";
/// Metadata key naming the queued parent of a row.
pub const QUEUED_PARENT_KEY: &str = "QUEUED_PARENT_TRANSACTION";
/// Metadata key holding why a transaction was rejected.
pub const REJECTION_REASON_KEY: &str = "blnk_rejection_reason";

impl TransactionRecord {
    /// Hex SHA-256 over amount, reference, currency, source and destination (Blnk's fields).
    pub fn content_hash(
        amount_major: &str,
        reference: &str,
        currency: &str,
        source: &str,
        destination: &str,
    ) -> String {
        let mut hasher = Sha256::new();
        for part in [amount_major, reference, currency, source, destination] {
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    pub fn amount_major(&self) -> String {
        self.precision.to_major(&self.precise_amount)
    }

    /// The row a worker writes when it applies (or rejects) this queued transaction.
    pub fn queued_child(&self, child_id: String, status: TransactionStatus) -> Self {
        let mut child = self.clone();
        child.transaction_id = child_id;
        child.parent_transaction = Some(self.transaction_id.clone());
        child.reference = format!("{}{}", self.reference, QUEUED_CHILD_SUFFIX);
        child.status = status;
        child.created_at = Utc::now();
        child.rehash();
        child
    }

    /// Sets `hash` from the fields it covers (after one of them changed).
    pub fn rehash(&mut self) {
        self.hash = Self::content_hash(
            &self.amount_major(),
            &self.reference,
            &self.currency,
            &self.source,
            &self.destination,
        );
    }

    pub fn with_rejection(mut self, reason: &str) -> Self {
        self.status = TransactionStatus::Rejected;
        let mut meta = match self.meta_data.take() {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        meta.insert(
            REJECTION_REASON_KEY.into(),
            serde_json::Value::String(reason.into()),
        );
        self.meta_data = Some(serde_json::Value::Object(meta));
        self
    }
}

#[cfg(test)]
impl TransactionRecord {
    /// A plain APPLIED transfer of 1 USD minor unit from `bln_a` to `bln_b`.
    pub(crate) fn sample_for_tests() -> Self {
        Self {
            transaction_id: "txn_1".into(),
            parent_transaction: None,
            source: "bln_a".into(),
            destination: "bln_b".into(),
            reference: "r".into(),
            precise_amount: 1.into(),
            precision: crate::domain::Precision::one(),
            currency: "USD".into(),
            description: None,
            status: TransactionStatus::Applied,
            hash: String::new(),
            allow_overdraft: false,
            overdraft_limit: None,
            inflight: false,
            skip_queue: false,
            atomic: false,
            created_at: chrono::Utc::now(),
            effective_date: None,
            scheduled_for: None,
            inflight_expiry_date: None,
            inflight_commit_date: None,
            meta_data: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for status in TransactionStatus::ALL {
            assert_eq!(status.as_str().parse::<TransactionStatus>(), Ok(status));
        }
        assert!("COMMIT".parse::<TransactionStatus>().is_err());
    }

    #[test]
    fn hash_is_hex_sha256_of_the_fields() {
        let hash = TransactionRecord::content_hash("10", "ref", "USD", "a", "b");
        assert_eq!(hash.len(), 64);
        assert_ne!(
            hash,
            TransactionRecord::content_hash("10", "ref", "USD", "b", "a")
        );
    }
}
