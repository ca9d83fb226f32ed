//! sea-orm entities of the three ledger tables. Written by hand rather than generated:
//! money columns use the custom [`Money`] type, which generation cannot produce.

pub mod balance;
pub mod inflight_hold;
pub mod ledger;
pub mod money;
pub mod transaction;

pub use money::Money;
