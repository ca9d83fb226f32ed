//! Accounts: a bank account around a balance. Opening one (`crate::accounts`) reads what
//! it needs first ([`Store::account_context`]), then stores the account, and the balance when
//! it creates one, in one transaction ([`Store::insert_account`]): a refused account (a taken
//! number) leaves no balance behind.

use super::balances::{insert_balance, NewBalance};
use super::changes::{self, Change};
use super::filter::{self, FieldKind, ListQuery};
use super::identities::{fields_of, find_identity, identity_exists};
use super::Store;
use crate::domain::identity::IdentityFields;
use crate::entity::{account, balance, ledger};
use crate::LedgerError;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, SqlErr, TransactionTrait};

pub(crate) const ACCOUNT_FIELDS: &[(&str, FieldKind)] = &[
    ("account_id", FieldKind::Text),
    ("name", FieldKind::Text),
    ("number", FieldKind::Text),
    ("bank_name", FieldKind::Text),
    ("currency", FieldKind::Text),
    ("ledger_id", FieldKind::Text),
    ("identity_id", FieldKind::Text),
    ("balance_id", FieldKind::Text),
    ("created_at", FieldKind::Time),
];

/// Where an account's balance comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountBalance {
    /// An existing balance.
    Existing(String),
    /// A new balance in this ledger and currency, for the account's identity.
    New { ledger_id: String, currency: String },
}

/// What an account is opened with, once its balance and identity are known.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountContext {
    pub balance: AccountBalance,
    pub ledger_id: String,
    pub currency: String,
    pub identity_id: String,
    pub identity: IdentityFields,
}

/// An account ready to be stored.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account_id: String,
    pub context: AccountContext,
    pub name: String,
    pub number: String,
    pub bank_name: String,
    pub meta_data: Option<serde_json::Value>,
}

impl Store {
    /// Reads what an account needs: from `balance_id`, its balance's ledger, currency and
    /// identity (the request's identity only where the balance has none); else the ledger and
    /// identity named, checked to exist.
    pub async fn account_context(
        &self,
        balance_id: Option<String>,
        ledger_id: Option<String>,
        identity_id: Option<String>,
        currency: Option<String>,
    ) -> Result<AccountContext, LedgerError> {
        self.run(|db| async move {
            let (balance, ledger_id, currency, identity_id) = match balance_id {
                Some(balance_id) => {
                    let found = balance::Entity::find_by_id(balance_id.clone())
                        .one(&db)
                        .await?
                        .ok_or_else(|| LedgerError::BalanceNotFound(balance_id.clone()))?;
                    let identity_id = found.identity_id.or(identity_id).ok_or_else(|| {
                        LedgerError::AccountValidation(format!(
                            "identity_id: required, balance '{balance_id}' has no identity."
                        ))
                    })?;
                    (
                        AccountBalance::Existing(balance_id),
                        found.ledger_id,
                        found.currency,
                        identity_id,
                    )
                }
                None => {
                    let (Some(ledger_id), Some(currency), Some(identity_id)) =
                        (ledger_id, currency, identity_id)
                    else {
                        return Err(LedgerError::Internal(
                            "account request checked without its balance fields".into(),
                        ));
                    };
                    if ledger::Entity::find_by_id(ledger_id.clone())
                        .one(&db)
                        .await?
                        .is_none()
                    {
                        return Err(LedgerError::LedgerNotFound(ledger_id));
                    }
                    let balance = AccountBalance::New {
                        ledger_id: ledger_id.clone(),
                        currency: currency.clone(),
                    };
                    (balance, ledger_id, currency, identity_id)
                }
            };
            let identity = fields_of(&find_identity(&db, &identity_id).await?);
            Ok(AccountContext {
                balance,
                ledger_id,
                currency,
                identity_id,
                identity,
            })
        })
        .await
    }

    /// Stores an account (and its new balance) in one transaction; a taken number is
    /// refused with nothing stored.
    pub async fn insert_account(&self, new: NewAccount) -> Result<account::Model, LedgerError> {
        let events = self.events();
        self.run(|db| async move {
            let txn = db.begin().await?;
            // Read before, checked again here: a delete of the identity meanwhile refuses this.
            if !identity_exists(&txn, &new.context.identity_id).await? {
                return Err(LedgerError::IdentityNotFound(new.context.identity_id));
            }
            let balance_id = match &new.context.balance {
                AccountBalance::Existing(id) => id.clone(),
                AccountBalance::New {
                    ledger_id,
                    currency,
                } => {
                    let balance = NewBalance {
                        ledger_id: ledger_id.clone(),
                        currency: currency.clone(),
                        identity_id: Some(new.context.identity_id.clone()),
                        indicator: None,
                        precision: None,
                        meta_data: None,
                        track_fund_lineage: false,
                        allocation_strategy: Some("FIFO".to_owned()),
                    };
                    insert_balance(&txn, balance).await?
                }
            };
            let model = account::ActiveModel {
                account_id: Set(new.account_id),
                name: Set(new.name),
                number: Set(new.number.clone()),
                bank_name: Set(new.bank_name),
                currency: Set(new.context.currency),
                ledger_id: Set(new.context.ledger_id),
                identity_id: Set(new.context.identity_id),
                balance_id: Set(balance_id),
                created_at: Set(Utc::now()),
                meta_data: Set(new.meta_data),
            };
            let stored = match model.insert(&txn).await {
                Ok(stored) => stored,
                Err(error)
                    if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) =>
                {
                    return Err(LedgerError::DuplicateAccount(new.number));
                }
                Err(error) => return Err(error.into()),
            };
            changes::record(&txn, events.as_deref(), Change::AccountCreated(&stored)).await?;
            txn.commit().await?;
            Ok(stored)
        })
        .await
    }

    pub async fn account(&self, id: &str) -> Result<account::Model, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move {
            account::Entity::find_by_id(id.clone())
                .one(&db)
                .await?
                .ok_or(LedgerError::AccountNotFound(id))
        })
        .await
    }

    pub async fn list_accounts(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<account::Model>, Option<u64>), LedgerError> {
        self.run(|db| async move {
            filter::run_list(&db, account::Entity::find(), ACCOUNT_FIELDS, &query).await
        })
        .await
    }
}
