//! One actor per live balance: the only writer of the balance's cached state in this
//! process. It checks funds (available − reserved) and holds reservations until the
//! committer has written the transfer; the database re-checks at commit (see `store::commit`).

use super::registry::RegistryMap;
use crate::domain::balance::{check_precision, GuardedChange};
use crate::domain::Precision;
use crate::store::{BalanceRow, BalanceState, Store};
use crate::LedgerError;
use actix::prelude::*;
use bigdecimal::num_bigint::{BigInt, Sign};
use bigdecimal::Zero;
use std::time::{Duration, Instant};

pub struct BalanceActor {
    row: BalanceRow,
    /// Debits reserved by transfers that are not committed yet.
    reserved: BigInt,
    store: Store,
    registry: RegistryMap,
    mailbox_capacity: usize,
    idle_after: Duration,
    last_used: Instant,
    reload_on_start: bool,
    /// The registry retired this actor while it held reservations: it stops once they are
    /// settled.
    retiring: bool,
}

impl BalanceActor {
    pub fn new(
        row: BalanceRow,
        store: Store,
        registry: RegistryMap,
        mailbox_capacity: usize,
        idle_after: Duration,
    ) -> Self {
        Self {
            row,
            reserved: BigInt::zero(),
            store,
            registry,
            mailbox_capacity,
            idle_after,
            last_used: Instant::now(),
            reload_on_start: false,
            retiring: false,
        }
    }

    /// Reserves the change's debit if the floor allows it against the cached state.
    fn try_reserve(&mut self, change: &GuardedChange) -> Result<(), LedgerError> {
        let debit = -change.delta.available_change();
        if let Some(floor) = &change.floor {
            let after = self.row.amounts.available() - &self.reserved - &debit;
            if !floor.permits(&after) {
                return Err(crate::store::refusal_for(&self.row.balance_id, Some(floor)));
            }
        }
        if debit.sign() == Sign::Plus {
            self.reserved += debit;
        }
        Ok(())
    }

    /// Whether the floor allows the debit against the stored amounts alone (no reservation).
    fn fits_stored(&self, change: &GuardedChange) -> bool {
        let debit = -change.delta.available_change();
        change
            .floor
            .as_ref()
            .is_none_or(|floor| floor.permits(&(self.row.amounts.available() - &debit)))
    }

    /// Reserves the debit without the floor check (the commit's guard checks it).
    fn reserve_over(&mut self, change: &GuardedChange) {
        let debit = -change.delta.available_change();
        if debit.sign() == Sign::Plus {
            self.reserved += debit;
        }
    }

    fn observe(&mut self, row: BalanceRow) {
        if row.version > self.row.version {
            self.row = row;
        }
    }

    /// A commit's result: newer amounts than the cached ones replace them.
    fn observe_state(&mut self, state: BalanceState) {
        if state.version > self.row.version {
            self.row.amounts = state.amounts;
            self.row.version = state.version;
        }
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let id = self.row.balance_id.clone();
        ctx.wait(
            async move { store.balance_rows(vec![id]).await }
                .into_actor(self)
                .map(|result, actor, ctx| match result {
                    Ok(mut rows) => {
                        if let Some(row) = rows.remove(&actor.row.balance_id) {
                            actor.row = row;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, balance_id = %actor.row.balance_id, "reload failed");
                        ctx.stop();
                    }
                }),
        );
    }
}

impl Actor for BalanceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        if std::mem::take(&mut self.reload_on_start) {
            self.reload(ctx);
        }
        let check_every = (self.idle_after / 2).max(Duration::from_millis(50));
        ctx.run_interval(check_every, |actor, ctx| {
            if actor.last_used.elapsed() >= actor.idle_after {
                actor.stop_if_free(ctx);
            }
        });
    }
}

impl BalanceActor {
    /// Leaves the registry and stops, unless a transfer still holds a reservation here.
    fn stop_if_free(&mut self, ctx: &mut Context<Self>) {
        if self.reserved.is_zero() {
            self.registry.forget(&self.row.balance_id, &ctx.address());
            ctx.stop();
        }
    }
}

impl Supervised for BalanceActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Reservations of in-flight transfers are released by their Settle messages; the
        // state itself is read again, since this actor may have missed updates.
        self.reload_on_start = true;
    }
}

/// Checks precision and reserves a debit (the source side of a transfer).
#[derive(Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct Reserve {
    pub change: GuardedChange,
    pub precision: Precision,
}

impl Handler<Reserve> for BalanceActor {
    type Result = AtomicResponse<Self, Result<(), LedgerError>>;

    #[tracing::instrument(level = "debug", name = "balance.reserve", skip_all, fields(balance_id = %self.row.balance_id))]
    fn handle(&mut self, message: Reserve, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        if let Err(error) = check_precision(
            &self.row.balance_id,
            self.row.precision.as_ref(),
            &message.precision,
        ) {
            return AtomicResponse::new(Box::pin(fut::ready(Err(error))));
        }
        if self.try_reserve(&message.change).is_ok() {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(()))));
        }
        // The cache may be stale (another process credited this balance): read the row
        // again before refusing. The mailbox waits meanwhile, so the check stays serial.
        let store = self.store.clone();
        let id = self.row.balance_id.clone();
        AtomicResponse::new(Box::pin(
            async move { store.balance_rows(vec![id]).await }
                .into_actor(self)
                .map(move |result, actor, _ctx| {
                    let mut rows = result?;
                    if let Some(row) = rows.remove(&actor.row.balance_id) {
                        actor.observe(row);
                    }
                    actor.try_reserve(&message.change).or_else(|refusal| {
                        // Two committers' settlements can arrive in another order than their
                        // batches committed: the later batch's state then already holds the
                        // earlier one's debits while their reservation is still counted here.
                        // When the debit fits what is stored, the group commit's guarded
                        // update decides (the database is the arbiter), not this cache.
                        if actor.fits_stored(&message.change) {
                            actor.reserve_over(&message.change);
                            Ok(())
                        } else {
                            Err(refusal)
                        }
                    })
                }),
        ))
    }
}

/// Reconstructs the balance from its transactions (see `ledger::metadata`): the mailbox
/// waits until the database is done, then the actor takes the new state.
#[derive(Message)]
#[rtype(result = "Result<crate::store::Reconstruction, LedgerError>")]
pub struct Reconstruct {
    pub update: serde_json::Map<String, serde_json::Value>,
}

impl Handler<Reconstruct> for BalanceActor {
    type Result = AtomicResponse<Self, Result<crate::store::Reconstruction, LedgerError>>;

    fn handle(&mut self, message: Reconstruct, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        let store = self.store.clone();
        let id = self.row.balance_id.clone();
        AtomicResponse::new(Box::pin(
            async move { store.reconstruct_balance(&id, message.update).await }
                .into_actor(self)
                .map(|result, actor, _ctx| {
                    let reconstruction = result?;
                    actor.observe_state(reconstruction.state.clone());
                    Ok(reconstruction)
                }),
        ))
    }
}

/// The registry is full and took this actor out of its map (least recently used): stop
/// now, or once the reservations held are settled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for BalanceActor {
    type Result = ();

    fn handle(&mut self, _message: Retire, ctx: &mut Context<Self>) {
        self.retiring = true;
        self.stop_if_free(ctx);
    }
}

/// A transfer finished: release its reservation and take the committed state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle {
    pub released: BigInt,
    pub row: Option<BalanceState>,
}

impl Handler<Settle> for BalanceActor {
    type Result = ();

    #[tracing::instrument(level = "debug", name = "balance.settle", skip_all, fields(balance_id = %self.row.balance_id))]
    fn handle(&mut self, message: Settle, ctx: &mut Context<Self>) {
        // A settled transfer is a use (the credited side gets no other message).
        self.last_used = Instant::now();
        self.reserved -= message.released;
        if self.reserved.sign() == Sign::Minus {
            // A restart dropped the reservation this releases.
            self.reserved = BigInt::zero();
        }
        if let Some(state) = message.row {
            self.observe_state(state);
        }
        if self.retiring {
            self.stop_if_free(ctx);
        }
    }
}
