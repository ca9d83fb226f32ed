//! The ledger core's errors. Variants are listed in precedence order: when a request breaks
//! several rules, the first one listed is the one reported.

use crate::domain::distribution::DistributionError;
use crate::domain::inflight::HoldRefusal;
use crate::domain::AmountError;
use crate::store::FilterError;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LedgerError {
    #[error("{0}")]
    LedgerValidation(String),
    #[error("{0}")]
    BalanceValidation(String),
    #[error("{0}")]
    TransactionValidation(String),
    #[error("{0}")]
    IdentityValidation(String),
    #[error("{0}")]
    AccountValidation(String),
    #[error("{0}")]
    MonitorValidation(String),
    #[error("{0}")]
    HookValidation(String),
    #[error("{0}")]
    InvalidFilter(FilterError),
    #[error("invalid timestamp format. Please use ISO 8601 format (e.g., 2024-01-01T15:04:05Z)")]
    InvalidTimestamp,
    #[error("invalid entity ID format: {0}")]
    InvalidEntityId(String),
    #[error("field {0} is not tokenizable")]
    FieldNotTokenizable(String),
    #[error("field {0} is not tokenized")]
    FieldNotTokenized(String),
    #[error(
        "tokenization is disabled: BLNK_TOKENIZATION_SECRET or tokenization_secret in your blnk.json file must be set to a 32-byte value"
    )]
    TokenizationDisabled,
    #[error("{0}")]
    InvalidAmount(AmountError),
    #[error("{0}")]
    InvalidDistribution(DistributionError),
    #[error("bulk request has no transactions")]
    BulkEmpty,
    #[error("bulk request has more than {0} transactions")]
    BulkLimitExceeded(usize),
    #[error("transactions[{index}]: {message}")]
    BulkItemInvalid { index: usize, message: String },
    #[error("invalid status action '{0}': use commit or void")]
    InvalidStatusAction(String),
    #[error("source and destination cannot be the same balance")]
    SameSourceAndDestination,
    #[error("ledger with ID '{0}' not found")]
    LedgerNotFound(String),
    #[error("balance with ID '{0}' not found")]
    BalanceNotFound(String),
    #[error("transaction with ID '{0}' not found")]
    TransactionNotFound(String),
    #[error("Identity with ID '{0}' not found")]
    IdentityNotFound(String),
    #[error("account with ID '{0}' not found")]
    AccountNotFound(String),
    #[error("balance monitor with ID '{0}' not found")]
    MonitorNotFound(String),
    #[error("hook with ID '{0}' not found")]
    HookNotFound(String),
    #[error("entity not found: {0}")]
    EntityNotFound(String),
    #[error(
        "precision {given} does not match balance '{balance_id}', which was created with precision {expected}"
    )]
    PrecisionMismatch {
        balance_id: String,
        expected: String,
        given: String,
    },
    #[error("transaction {0} is not in inflight status")]
    NotInflight(String),
    #[error("cannot commit. Transaction already committed")]
    AlreadyCommitted(String),
    #[error("transaction {0} has already been voided")]
    AlreadyVoided(String),
    #[error("cannot commit more than the remaining amount {remaining} of transaction {id}")]
    CommitAmountExceeded { id: String, remaining: String },
    #[error("a commit or void is already queued for this transaction")]
    ActionAlreadyQueued(String),
    #[error("transaction {id} cannot be refunded in status {status} (only APPLIED or VOID)")]
    NotRefundable { id: String, status: String },
    #[error("transaction {0} has already been refunded")]
    AlreadyRefunded(String),
    #[error("reference {0} has already been used")]
    DuplicateReference(String),
    #[error("balance with indicator '{indicator}' and currency '{currency}' already exists")]
    DuplicateBalance { indicator: String, currency: String },
    #[error("Identity already exists: {0}")]
    DuplicateIdentity(String),
    #[error("account with number '{0}' already exists")]
    DuplicateAccount(String),
    #[error("field {0} is already tokenized")]
    FieldAlreadyTokenized(String),
    #[error("identity {id} is still linked to {balances} balance(s) and {accounts} account(s)")]
    IdentityInUse {
        id: String,
        balances: u64,
        accounts: u64,
    },
    #[error("insufficient funds in source balance '{0}'")]
    InsufficientFunds(String),
    #[error("transaction exceeds overdraft limit of source balance '{0}'")]
    OverdraftLimitExceeded(String),
    #[error("not applied: {0}")]
    UnitRefused(String),
    /// A bulk batch stopped at item `index`; code and status are the cause's.
    #[error("{message}")]
    BatchRefused {
        index: usize,
        message: String,
        cause: Box<LedgerError>,
    },
    #[error("the ledger is overloaded; retry shortly")]
    Overloaded,
    /// The configured account-number service failed (its words, never its URL).
    #[error("account number generation failed: {0}")]
    AccountNumberGeneration(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("queue error: {0}")]
    Queue(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl LedgerError {
    /// Why a commit or void of hold `hold_id` was refused, as an API error.
    pub fn hold_refused(hold_id: &str, refusal: HoldRefusal) -> Self {
        let id = hold_id.to_owned();
        match refusal {
            HoldRefusal::AlreadyCommitted => Self::AlreadyCommitted(id),
            HoldRefusal::AlreadyVoided => Self::AlreadyVoided(id),
            HoldRefusal::CommitExceeds { remaining } => Self::CommitAmountExceeded {
                id,
                remaining: remaining.to_string(),
            },
            HoldRefusal::NotPositive => Self::InvalidAmount(AmountError::NotPositive),
        }
    }

    /// Blnk's `rejection.reason` / `blnk_rejection_reason` words for refusals.
    pub fn rejection_reason(&self) -> String {
        self.to_string()
    }

    /// Refusals that depend on balance state (a queued transaction is REJECTED for them).
    pub fn is_funds_refusal(&self) -> bool {
        matches!(
            self,
            Self::InsufficientFunds(_) | Self::OverdraftLimitExceeded(_)
        )
    }
}

impl From<sea_orm::DbErr> for LedgerError {
    fn from(error: sea_orm::DbErr) -> Self {
        LedgerError::Storage(error.to_string())
    }
}

impl From<AmountError> for LedgerError {
    fn from(error: AmountError) -> Self {
        LedgerError::InvalidAmount(error)
    }
}

impl From<DistributionError> for LedgerError {
    fn from(error: DistributionError) -> Self {
        LedgerError::InvalidDistribution(error)
    }
}
