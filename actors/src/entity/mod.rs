//! sea-orm entities of Coffer's tables. Written by hand rather than generated:
//! money columns use the custom [`Money`] type, which generation cannot produce.

pub mod account;
pub mod api_key;
pub mod balance;
pub mod balance_monitor;
pub mod balance_snapshot;
pub mod identity;
pub mod inflight_hold;
pub mod ledger;
pub mod money;
pub mod transaction;

pub use money::Money;
