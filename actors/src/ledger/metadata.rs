//! Metadata updates (`POST /{entity-id}/metadata`), and the balance reconstruction a
//! balance's metadata can ask for (Blnk's `BLNK_RUN_RECONCILIATION: "SOURCE"`).
//!
//! A reconstruction rewrites the balance's amounts, so it goes through the balance's actor
//! ([`Reconstruct`]): the actor's mailbox waits while the database recomputes, so this process
//! reserves nothing against the old amounts meanwhile, and the actor takes the new state.

use super::balance_actor::Reconstruct;
use super::{mailbox, Ledger};
use crate::domain::ids::{metadata_target, MetadataTarget};
use crate::store::history::{RECONSTRUCTION_FROM_SOURCE, RECONSTRUCTION_KEY};
use crate::LedgerError;
use serde_json::{Map, Value};

impl Ledger {
    /// Merges `update` into the entity's `meta_data` and answers Blnk's `meta_data` (see
    /// `Store::merge_metadata`); on a balance, `BLNK_RUN_RECONCILIATION: "SOURCE"` also
    /// reconstructs it.
    pub async fn update_metadata(
        &self,
        entity_id: &str,
        update: Map<String, Value>,
    ) -> Result<Value, LedgerError> {
        let target = metadata_target(entity_id)
            .ok_or_else(|| LedgerError::InvalidEntityId(entity_id.to_owned()))?;
        let reconstruct = target == MetadataTarget::Balance
            && update.get(RECONSTRUCTION_KEY).and_then(Value::as_str)
                == Some(RECONSTRUCTION_FROM_SOURCE);
        if !reconstruct {
            return self.store().merge_metadata(target, entity_id, update).await;
        }
        let unknown = |error| match error {
            LedgerError::BalanceNotFound(_) => LedgerError::EntityNotFound(entity_id.to_owned()),
            other => other,
        };
        let actor = self.registry().actor(entity_id).await.map_err(unknown)?;
        let reconstruction = actor
            .send(Reconstruct { update })
            .await
            .map_err(mailbox)?
            .map_err(unknown)?;
        Ok(reconstruction.meta_data)
    }
}
