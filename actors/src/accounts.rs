//! Opening accounts (Blnk's bank-account wrapper around a balance).
//!
//! An account is opened on an existing balance (`balance_id`: its ledger, currency and
//! identity are the account's), or on a new balance created for it (`ledger_id`,
//! `identity_id` and `currency`; Blnk documents this path but its code reads an empty
//! balance id and fails). Its name is its identity's (the organization's name, or first and
//! last name). Its number is the one given, or, when none is and generation is configured,
//! one from the account-number service ([`AccountNumbers`]); Blnk asks the service even when a
//! number was given and silently keeps that number when the service answers nothing.
//!
//! Everything is read and generated before anything is written; the account and its new
//! balance are then stored in one transaction, so a refusal (a taken number, a failed service)
//! changes nothing.

use crate::domain::ids;
use crate::entity::account;
use crate::store::{NewAccount, Store};
use crate::LedgerError;
use futures_util::future::LocalBoxFuture;

/// Longest account number, given or generated.
pub const NUMBER_CHARS_MAX: usize = 64;

/// A number and bank from the account-number service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedAccount {
    pub number: String,
    pub bank_name: String,
}

/// The configured account-number service (`account_number_generation.http_service`). The
/// HTTP shell implements it; the core only asks.
pub trait AccountNumbers {
    /// A fresh number, or why there is none ([`LedgerError::AccountNumberGeneration`]).
    fn generate(&self) -> LocalBoxFuture<'_, Result<GeneratedAccount, LedgerError>>;
}

/// What a client asks for (fields checked for shape by the caller).
#[derive(Debug, Clone, Default)]
pub struct AccountRequest {
    pub balance_id: Option<String>,
    pub ledger_id: Option<String>,
    pub identity_id: Option<String>,
    pub currency: Option<String>,
    pub number: Option<String>,
    pub bank_name: Option<String>,
    pub meta_data: Option<serde_json::Value>,
}

/// Opens an account (see the module docs).
pub async fn open(
    store: &Store,
    request: AccountRequest,
    numbers: Option<&dyn AccountNumbers>,
) -> Result<account::Model, LedgerError> {
    let context = store
        .account_context(
            request.balance_id,
            request.ledger_id,
            request.identity_id,
            request.currency,
        )
        .await?;
    let (number, bank_name) = match (request.number, numbers) {
        (Some(number), _) => (number, request.bank_name.unwrap_or_default()),
        (None, Some(numbers)) => {
            let generated = numbers.generate().await?;
            let number = generated.number.trim().to_owned();
            if number.is_empty() || number.chars().count() > NUMBER_CHARS_MAX {
                return Err(LedgerError::AccountNumberGeneration(format!(
                    "the account number service answered an account_number that is blank or \
                     longer than {NUMBER_CHARS_MAX} characters"
                )));
            }
            let bank_name = generated.bank_name.trim().to_owned();
            (number, request.bank_name.unwrap_or(bank_name))
        }
        (None, None) => {
            return Err(LedgerError::AccountValidation(
                "number: cannot be blank (or turn on account_number_generation)".into(),
            ))
        }
    };
    let name = context.identity.account_name();
    store
        .insert_account(NewAccount {
            account_id: ids::new_id(ids::ACCOUNT_PREFIX),
            context,
            name,
            number,
            bank_name,
            meta_data: request.meta_data,
        })
        .await
}
