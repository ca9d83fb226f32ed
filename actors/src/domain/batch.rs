//! Admission of a batch of transfers against the balances' current state.
//!
//! Each balance takes its changes in arrival order. A debit whose floor would be crossed is
//! refused, and so is its whole transfer (all legs or none). Refusing a transfer also takes
//! away its credits, which may make a later debit elsewhere fail, so admission repeats until
//! nothing changes. The refused set only grows, so it ends within `items + 1` rounds.

use super::balance::GuardedChange;
use bigdecimal::num_bigint::BigInt;
use std::collections::HashMap;

/// The changes of one transfer, each to a named balance.
pub type TransferChanges = [(String, GuardedChange)];

/// For each item, `None` if admitted, or `Some(i)` where change `i` of the item was refused.
/// Items with `excluded[k] = true` take no part (already refused for other reasons).
pub fn admit_batch<'a, I>(
    available: &HashMap<String, BigInt>,
    items: I,
    excluded: &[bool],
) -> Vec<Option<usize>>
where
    I: IntoIterator<Item = &'a TransferChanges>,
{
    let items: Vec<&TransferChanges> = items.into_iter().collect();
    assert_eq!(items.len(), excluded.len());
    let mut refused: Vec<Option<usize>> = vec![None; items.len()];
    loop {
        let mut running: HashMap<&str, BigInt> = available
            .iter()
            .map(|(id, value)| (id.as_str(), value.clone()))
            .collect();
        let mut changed = false;
        for (index, changes) in items.iter().enumerate() {
            if excluded[index] || refused[index].is_some() {
                continue;
            }
            let failing = changes.iter().position(|(balance_id, change)| {
                let Some(floor) = &change.floor else {
                    return false;
                };
                let current = running
                    .get(balance_id.as_str())
                    .cloned()
                    .unwrap_or_default();
                !floor.permits(&(current + change.delta.available_change()))
            });
            match failing {
                Some(position) => {
                    refused[index] = Some(position);
                    changed = true;
                }
                None => {
                    for (balance_id, change) in changes.iter() {
                        *running.entry(balance_id.as_str()).or_default() +=
                            change.delta.available_change();
                    }
                }
            }
        }
        if !changed {
            return refused;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::balance::{BalanceDelta, Floor};
    use bigdecimal::Zero;
    use proptest::prelude::*;

    fn transfer(
        source: &str,
        destination: &str,
        amount: i64,
        floor: Floor,
    ) -> Vec<(String, GuardedChange)> {
        let amount = BigInt::from(amount);
        vec![
            (
                source.into(),
                GuardedChange {
                    delta: BalanceDelta::debit(&amount),
                    floor: Some(floor),
                },
            ),
            (
                destination.into(),
                GuardedChange {
                    delta: BalanceDelta::credit(&amount),
                    floor: None,
                },
            ),
        ]
    }

    #[test]
    fn refusing_a_transfer_takes_its_credit_away() {
        let available: HashMap<String, BigInt> = [
            ("a".to_string(), BigInt::from(10)),
            ("b".to_string(), BigInt::zero()),
        ]
        .into();
        let zero = || Floor::AtLeast(BigInt::zero());
        // a→b 20 fails; b→a 5 relied on it only if it came later, so it fails too.
        let items = [
            transfer("a", "b", 20, zero()),
            transfer("b", "a", 5, zero()),
        ];
        let outcome = admit_batch(
            &available,
            items.iter().map(|i| i.as_slice()),
            &[false, false],
        );
        assert_eq!(outcome, vec![Some(0), Some(0)]);
        // With a first, a→b 10 passes and b→a 5 can use it.
        let items = [
            transfer("a", "b", 10, zero()),
            transfer("b", "a", 5, zero()),
        ];
        let outcome = admit_batch(
            &available,
            items.iter().map(|i| i.as_slice()),
            &[false, false],
        );
        assert_eq!(outcome, vec![None, None]);
    }

    proptest! {
        /// Whatever the batch, admitted changes never take a balance below its floor.
        #[test]
        fn admitted_changes_respect_every_floor(
            starts in proptest::collection::vec(0i64..100, 3),
            moves in proptest::collection::vec((0usize..3, 0usize..3, 1i64..80, any::<bool>()), 1..30),
        ) {
            let names = ["a", "b", "c"];
            let available: HashMap<String, BigInt> =
                names.iter().zip(&starts).map(|(n, s)| (n.to_string(), BigInt::from(*s))).collect();
            let items: Vec<_> = moves.iter().filter(|(s, d, _, _)| s != d).map(|(s, d, amount, overdraft)| {
                let floor = if *overdraft { Floor::AtLeast(BigInt::from(-20)) } else { Floor::AtLeast(BigInt::zero()) };
                transfer(names[*s], names[*d], *amount, floor)
            }).collect();
            let excluded = vec![false; items.len()];
            let outcome = admit_batch(&available, items.iter().map(|i| i.as_slice()), &excluded);
            let mut running = available.clone();
            for (item, refused) in items.iter().zip(&outcome) {
                if refused.is_some() { continue; }
                for (id, change) in item {
                    let value = running.get_mut(id).unwrap();
                    *value += change.delta.available_change();
                    if let Some(floor) = &change.floor {
                        prop_assert!(floor.permits(value));
                    }
                }
            }
        }
    }
}
