//! Admission of a batch of transfers against the balances' current state.
//!
//! A batch is a list of units; a unit is a list of items (one transfer, one leg of a split,
//! one row of a bulk request); an item is a list of balance changes applied together. Each
//! balance takes its changes in batch order. An item whose debit would cross its floor is
//! refused, and with it:
//! - [`UnitMode::Atomic`]: every item of its unit (all legs or none);
//! - [`UnitMode::UntilFirstFailure`]: every later item of its unit (Blnk's non-atomic bulk);
//! - [`UnitMode::Independent`]: nothing else.
//!
//! Refusing an item takes its credits away, which may make a later debit elsewhere fail, so
//! admission repeats until nothing changes. The refused set only grows, so it ends.

use super::balance::{BalanceDelta, Floor, GuardedChange};
use bigdecimal::num_bigint::BigInt;
use std::collections::{BTreeMap, HashMap};

/// The changes of one item, each to a named balance.
pub type ItemChanges = [(String, GuardedChange)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitMode {
    Independent,
    Atomic,
    UntilFirstFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Change `change` of the item crossed its floor.
    Refused {
        change: usize,
    },
    /// Another item of the unit was refused (or excluded).
    RefusedWithUnit,
    /// Excluded by the caller before admission.
    Excluded,
}

/// One unit: its mode and its items' changes, in order.
pub struct Unit<'a> {
    pub mode: UnitMode,
    pub items: Vec<&'a ItemChanges>,
}

/// Decides every item; `excluded[u][i]` marks items already refused for other reasons.
pub fn admit_units(
    available: &HashMap<String, BigInt>,
    units: &[Unit<'_>],
    excluded: &[Vec<bool>],
) -> Vec<Vec<Admission>> {
    assert_eq!(units.len(), excluded.len());
    let mut decided: Vec<Vec<Admission>> = units
        .iter()
        .zip(excluded)
        .map(|(unit, excluded)| {
            assert_eq!(unit.items.len(), excluded.len());
            starting_decisions(unit.mode, excluded)
        })
        .collect();
    loop {
        let mut running: HashMap<&str, BigInt> = available
            .iter()
            .map(|(id, value)| (id.as_str(), value.clone()))
            .collect();
        let mut changed = false;
        for (unit, decisions) in units.iter().zip(decided.iter_mut()) {
            let before = decisions.clone();
            match unit.mode {
                UnitMode::Atomic => {
                    let mut scratch = running.clone();
                    let mut failed = false;
                    for (index, changes) in unit.items.iter().enumerate() {
                        if decisions[index] != Admission::Admitted {
                            failed = true;
                            break;
                        }
                        if let Err(change) = apply_item(&mut scratch, changes) {
                            decisions[index] = Admission::Refused { change };
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        propagate(unit.mode, decisions);
                    } else {
                        running = scratch;
                    }
                }
                UnitMode::Independent | UnitMode::UntilFirstFailure => {
                    for (index, changes) in unit.items.iter().enumerate() {
                        if decisions[index] != Admission::Admitted {
                            continue;
                        }
                        if let Err(change) = apply_item(&mut running, changes) {
                            decisions[index] = Admission::Refused { change };
                        }
                        propagate(unit.mode, decisions);
                    }
                }
            }
            changed |= *decisions != before;
        }
        if !changed {
            return decided;
        }
    }
}

/// What one balance must satisfy for a whole batch to be admitted: its net change, and the
/// least `available` it must hold before the batch (`None`: no debit of it has a floor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceGuard {
    pub net: BalanceDelta,
    pub available_min: Option<BigInt>,
}

/// The guard of every balance the items not `excluded` change, so that [`admit_units`]
/// admits all of those items exactly when every balance's `available` meets its
/// `available_min`: each floored change, taken in batch order after all the earlier ones,
/// must leave its balance at or above its floor, that is `available ≥ floor − (the
/// balance's changes up to and including this one)`. A store can then write the batch as
/// one guarded update per balance, with no read first, and decide item by item only when
/// a guard fails. `None` when the excluded items alone refuse others (an atomic unit, or a
/// later item of an until-first-failure unit): then not all can be admitted.
pub fn admission_guards<'a>(
    units: &[Unit<'a>],
    excluded: &[Vec<bool>],
) -> Option<BTreeMap<&'a str, BalanceGuard>> {
    assert_eq!(units.len(), excluded.len());
    for (unit, excluded) in units.iter().zip(excluded) {
        if starting_decisions(unit.mode, excluded).contains(&Admission::RefusedWithUnit) {
            return None;
        }
    }
    // Per balance: its guard, and the sum of its changes so far in `available` terms.
    let mut guards: BTreeMap<&'a str, (BalanceGuard, BigInt)> = BTreeMap::new();
    for (unit, excluded) in units.iter().zip(excluded) {
        for (changes, _) in unit.items.iter().zip(excluded).filter(|(_, e)| !**e) {
            for (balance_id, change) in changes.iter() {
                let (guard, so_far) = guards.entry(balance_id.as_str()).or_default();
                *so_far += change.delta.available_change();
                guard.net.add(&change.delta);
                if let Some(Floor::AtLeast(floor)) = &change.floor {
                    let needed = floor - &*so_far;
                    if guard.available_min.as_ref().is_none_or(|min| &needed > min) {
                        guard.available_min = Some(needed);
                    }
                }
            }
        }
    }
    Some(
        guards
            .into_iter()
            .map(|(id, (guard, _))| (id, guard))
            .collect(),
    )
}

/// Applies an item's changes in order; on `Err(i)` (change `i` crosses its floor) the
/// changes already applied are undone, so `running` is as it was.
fn apply_item<'a>(
    running: &mut HashMap<&'a str, BigInt>,
    changes: &'a ItemChanges,
) -> Result<(), usize> {
    for (index, (balance_id, change)) in changes.iter().enumerate() {
        let current = running.entry(balance_id.as_str()).or_default();
        let after = &*current + change.delta.available_change();
        if change
            .floor
            .as_ref()
            .is_some_and(|floor| !floor.permits(&after))
        {
            for (undo_id, undo) in &changes[..index] {
                if let Some(value) = running.get_mut(undo_id.as_str()) {
                    *value -= undo.delta.available_change();
                }
            }
            return Err(index);
        }
        *current = after;
    }
    Ok(())
}

/// A unit's decisions before any balance is looked at: its excluded items, and what they
/// refuse of the rest of the unit.
fn starting_decisions(mode: UnitMode, excluded: &[bool]) -> Vec<Admission> {
    let mut decisions = excluded
        .iter()
        .map(|&e| {
            if e {
                Admission::Excluded
            } else {
                Admission::Admitted
            }
        })
        .collect::<Vec<_>>();
    propagate(mode, &mut decisions);
    decisions
}

/// Spreads a refusal inside a unit according to its mode.
fn propagate(mode: UnitMode, decisions: &mut [Admission]) {
    let first_refused = decisions.iter().position(|d| *d != Admission::Admitted);
    let Some(first) = first_refused else { return };
    let spread = match mode {
        UnitMode::Independent => return,
        UnitMode::Atomic => 0..decisions.len(),
        UnitMode::UntilFirstFailure => first..decisions.len(),
    };
    for decision in &mut decisions[spread] {
        if *decision == Admission::Admitted {
            *decision = Admission::RefusedWithUnit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn zero() -> Floor {
        Floor::AtLeast(BigInt::zero())
    }

    fn start() -> HashMap<String, BigInt> {
        [
            ("a".to_string(), BigInt::from(10)),
            ("b".to_string(), BigInt::zero()),
        ]
        .into()
    }

    fn singles<'a>(items: &'a [Vec<(String, GuardedChange)>]) -> Vec<Unit<'a>> {
        items
            .iter()
            .map(|i| Unit {
                mode: UnitMode::Independent,
                items: vec![i.as_slice()],
            })
            .collect()
    }

    #[test]
    fn refusing_a_transfer_takes_its_credit_away() {
        // a→b 20 fails, so b has nothing for b→a 5.
        let items = [
            transfer("a", "b", 20, zero()),
            transfer("b", "a", 5, zero()),
        ];
        let decided = admit_units(&start(), &singles(&items), &[vec![false], vec![false]]);
        assert_eq!(
            decided,
            vec![
                vec![Admission::Refused { change: 0 }],
                vec![Admission::Refused { change: 0 }]
            ]
        );
        let items = [
            transfer("a", "b", 10, zero()),
            transfer("b", "a", 5, zero()),
        ];
        let decided = admit_units(&start(), &singles(&items), &[vec![false], vec![false]]);
        assert_eq!(
            decided,
            vec![vec![Admission::Admitted], vec![Admission::Admitted]]
        );
    }

    #[test]
    fn atomic_units_are_all_or_nothing_and_see_their_own_credits() {
        let items = [
            transfer("a", "b", 10, zero()),
            transfer("b", "a", 10, zero()),
            transfer("a", "b", 11, zero()),
        ];
        let unit = |n: usize| Unit {
            mode: UnitMode::Atomic,
            items: items[..n].iter().map(|i| i.as_slice()).collect(),
        };
        let decided = admit_units(&start(), &[unit(2)], &[vec![false; 2]]);
        assert_eq!(decided, vec![vec![Admission::Admitted; 2]]);
        let decided = admit_units(&start(), &[unit(3)], &[vec![false; 3]]);
        assert_eq!(
            decided,
            vec![vec![
                Admission::RefusedWithUnit,
                Admission::RefusedWithUnit,
                Admission::Refused { change: 0 }
            ]]
        );
    }

    #[test]
    fn until_first_failure_stops_the_rest_of_its_unit() {
        let items = [
            transfer("a", "b", 5, zero()),
            transfer("a", "b", 50, zero()),
            transfer("a", "b", 1, zero()),
        ];
        let unit = Unit {
            mode: UnitMode::UntilFirstFailure,
            items: items.iter().map(|i| i.as_slice()).collect(),
        };
        let decided = admit_units(&start(), &[unit], &[vec![false; 3]]);
        assert_eq!(
            decided,
            vec![vec![
                Admission::Admitted,
                Admission::Refused { change: 0 },
                Admission::RefusedWithUnit
            ]]
        );
    }

    #[test]
    fn guards_sum_the_changes_and_keep_the_tightest_floor() {
        let items = [
            transfer("a", "b", 10, zero()),
            transfer("b", "a", 4, Floor::AtLeast(BigInt::from(-5))),
            transfer("a", "c", 3, Floor::Unlimited),
        ];
        let guards = admission_guards(&singles(&items), &[vec![false], vec![false], vec![true]])
            .expect("independent items");
        let a = &guards["a"];
        assert_eq!(a.net.debit, BigInt::from(10));
        assert_eq!(a.net.credit, BigInt::from(4));
        // a must hold 10 before its debit of 10 (floor 0).
        assert_eq!(a.available_min, Some(BigInt::from(10)));
        // b is credited 10 first, then may go to −5: it needs −5 − (10 − 4) = −11.
        assert_eq!(guards["b"].available_min, Some(BigInt::from(-11)));
        assert!(!guards.contains_key("c"), "excluded items have no guard");
    }

    #[test]
    fn an_excluded_item_of_an_atomic_unit_leaves_no_guards() {
        let items = [transfer("a", "b", 1, zero()), transfer("a", "b", 1, zero())];
        let unit = |mode| Unit {
            mode,
            items: items.iter().map(|i| i.as_slice()).collect(),
        };
        let excluded = [vec![true, false]];
        assert!(admission_guards(&[unit(UnitMode::Atomic)], &excluded).is_none());
        assert!(admission_guards(&[unit(UnitMode::UntilFirstFailure)], &excluded).is_none());
        assert!(admission_guards(&[unit(UnitMode::Independent)], &excluded).is_some());
        // Excluding the last item of an until-first-failure unit refuses nothing else.
        let excluded = [vec![false, true]];
        assert!(admission_guards(&[unit(UnitMode::UntilFirstFailure)], &excluded).is_some());
    }

    proptest! {
        /// Every balance meets its guard exactly when admission admits the whole batch.
        #[test]
        fn guards_hold_exactly_when_every_item_is_admitted(
            starts in proptest::collection::vec(-30i64..100, 3),
            moves in proptest::collection::vec((0usize..3, 0usize..3, 1i64..80, 0u8..3), 1..30),
            atomic_every in 1usize..4,
            excluded_every in 0usize..5,
            until_first_failure in any::<bool>(),
        ) {
            let names = ["a", "b", "c"];
            let available: HashMap<String, BigInt> =
                names.iter().zip(&starts).map(|(n, s)| (n.to_string(), BigInt::from(*s))).collect();
            let items: Vec<_> = moves.iter().filter(|(s, d, _, _)| s != d).map(|(s, d, amount, kind)| {
                let floor = match kind {
                    0 => zero(),
                    1 => Floor::AtLeast(BigInt::from(-20)),
                    _ => Floor::Unlimited,
                };
                transfer(names[*s], names[*d], *amount, floor)
            }).collect();
            let mode = match (atomic_every > 1, until_first_failure) {
                (false, _) => UnitMode::Independent,
                (true, false) => UnitMode::Atomic,
                (true, true) => UnitMode::UntilFirstFailure,
            };
            let units: Vec<Unit> = items.chunks(atomic_every).map(|chunk| Unit {
                mode,
                items: chunk.iter().map(|i| i.as_slice()).collect(),
            }).collect();
            let mut counter = 0;
            let excluded: Vec<Vec<bool>> = units.iter().map(|u| u.items.iter().map(|_| {
                counter += 1;
                excluded_every > 0 && counter % (excluded_every + 1) == 0
            }).collect()).collect();
            let decided = admit_units(&available, &units, &excluded);
            let all_admitted = decided.iter().flatten().all(|d| matches!(d, Admission::Admitted | Admission::Excluded));
            let guards_hold = admission_guards(&units, &excluded).is_some_and(|guards| {
                guards.iter().all(|(id, guard)| {
                    guard.available_min.as_ref().is_none_or(|min| &available[*id] >= min)
                })
            });
            prop_assert_eq!(all_admitted, guards_hold);
        }

        /// Whatever the batch, admitted changes never take a balance below its floor.
        #[test]
        fn admitted_changes_respect_every_floor(
            starts in proptest::collection::vec(0i64..100, 3),
            moves in proptest::collection::vec((0usize..3, 0usize..3, 1i64..80, any::<bool>()), 1..30),
            atomic_every in 1usize..4,
        ) {
            let names = ["a", "b", "c"];
            let available: HashMap<String, BigInt> =
                names.iter().zip(&starts).map(|(n, s)| (n.to_string(), BigInt::from(*s))).collect();
            let items: Vec<_> = moves.iter().filter(|(s, d, _, _)| s != d).map(|(s, d, amount, overdraft)| {
                let floor = if *overdraft { Floor::AtLeast(BigInt::from(-20)) } else { zero() };
                transfer(names[*s], names[*d], *amount, floor)
            }).collect();
            let units: Vec<Unit> = items.chunks(atomic_every).map(|chunk| Unit {
                mode: if atomic_every > 1 { UnitMode::Atomic } else { UnitMode::Independent },
                items: chunk.iter().map(|i| i.as_slice()).collect(),
            }).collect();
            let excluded: Vec<Vec<bool>> = units.iter().map(|u| vec![false; u.items.len()]).collect();
            let decided = admit_units(&available, &units, &excluded);
            let mut running = available.clone();
            for (unit, decisions) in units.iter().zip(&decided) {
                let admitted = decisions.iter().filter(|d| **d == Admission::Admitted).count();
                if unit.mode == UnitMode::Atomic {
                    prop_assert!(admitted == 0 || admitted == unit.items.len());
                }
                for (item, decision) in unit.items.iter().zip(decisions) {
                    if *decision != Admission::Admitted { continue; }
                    for (id, change) in item.iter() {
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
}
