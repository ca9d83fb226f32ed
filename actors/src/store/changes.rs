//! The one place where a created, changed or deleted entity is known: every write of an
//! identity, account, monitor or entity metadata calls [`record`] inside the database
//! transaction that made the change, with the change as it was stored.
//!
//! Each [`Change`] becomes an outbox row right here, in the same transaction
//! (`identity.created`, …; see [`crate::events`]), when the store writes events: nothing is
//! published before its commit and nothing committed is lost. No personal data is logged
//! (only kinds and ids).

use crate::entity::{account, balance_monitor, identity};
use crate::events::outbox::{self, NewEvent};
use crate::events::routing::EventWriter;
use crate::events::Payloads;
use sea_orm::{ConnectionTrait, DbErr};

/// What changed, as stored.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    IdentityCreated(&'a identity::Model),
    IdentityUpdated(&'a identity::Model),
    IdentityDeleted(&'a str),
    AccountCreated(&'a account::Model),
    MonitorCreated(&'a balance_monitor::Model),
    MonitorUpdated(&'a balance_monitor::Model),
    MonitorDeleted(&'a str),
    /// `POST /{id}/metadata` on a ledger, balance, identity or transaction (and its children).
    MetadataUpdated(&'a str),
    /// A balance's amounts were recomputed from its transactions.
    BalanceReconstructed(&'a str),
}

impl Change<'_> {
    /// A short name of the change (the future event's name where Blnk has one).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::IdentityCreated(_) => "identity.created",
            Change::IdentityUpdated(_) => "identity.updated",
            Change::IdentityDeleted(_) => "identity.deleted",
            Change::AccountCreated(_) => "account.created",
            Change::MonitorCreated(_) => "balance_monitor.created",
            Change::MonitorUpdated(_) => "balance_monitor.updated",
            Change::MonitorDeleted(_) => "balance_monitor.deleted",
            Change::MetadataUpdated(_) => "metadata.updated",
            Change::BalanceReconstructed(_) => "balance.reconstructed",
        }
    }

    /// The id of the entity that changed.
    pub fn entity_id(&self) -> &str {
        match self {
            Change::IdentityCreated(model) | Change::IdentityUpdated(model) => &model.identity_id,
            Change::AccountCreated(model) => &model.account_id,
            Change::MonitorCreated(model) | Change::MonitorUpdated(model) => &model.monitor_id,
            Change::IdentityDeleted(id)
            | Change::MonitorDeleted(id)
            | Change::MetadataUpdated(id)
            | Change::BalanceReconstructed(id) => id,
        }
    }
}

impl Change<'_> {
    /// Blnk's `data` object of the change's event: the entity as the API serves it, or, for a
    /// deletion or a change named only by its id, that id.
    fn payload(&self, payloads: &dyn Payloads) -> String {
        let id_only = |field: &str, id: &str| serde_json::json!({ field: id }).to_string();
        match self {
            Change::IdentityCreated(model) | Change::IdentityUpdated(model) => {
                payloads.identity(model)
            }
            Change::AccountCreated(model) => payloads.account(model),
            Change::MonitorCreated(model) | Change::MonitorUpdated(model) => {
                payloads.monitor(model)
            }
            Change::IdentityDeleted(id) => id_only("identity_id", id),
            Change::MonitorDeleted(id) => id_only("monitor_id", id),
            Change::MetadataUpdated(id) => id_only("entity_id", id),
            Change::BalanceReconstructed(id) => id_only("balance_id", id),
        }
    }
}

/// Records a change inside the transaction `db` that made it (see the module docs); with
/// `payloads`, as an outbox event.
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    events: Option<&EventWriter>,
    change: Change<'_>,
) -> Result<(), DbErr> {
    tracing::trace!(kind = change.kind(), id = change.entity_id(), "change");
    let Some(events) = events else {
        return Ok(());
    };
    if let (Change::MonitorCreated(model) | Change::MonitorUpdated(model), Some(balances)) =
        (change, events.monitored_balances())
    {
        balances.insert(&model.balance_id);
    }
    let payload = change.payload(&*events.payloads);
    let event = NewEvent::of(change.kind(), change.entity_id(), payload);
    outbox::insert(db, events, &[event]).await
}
