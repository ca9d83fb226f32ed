//! Splitting one amount over several sources or destinations (Blnk's distributions).
//!
//! In minor units, exactly: fixed legs first (`"100"` in major units, or
//! `precise_distribution` in minor units), then percentages of the total (each rounded down;
//! the group's rounding residue goes to its largest member), then the one `left` leg takes
//! what remains. Without a `left` leg the legs must cover the total, up to the rounding
//! residue of the percentages (given to the largest leg). A total of one minor unit or less
//! goes to the first leg. Zero-amount legs are dropped.

use super::amount::{round_to_integer, Precision};
use bigdecimal::num_bigint::{BigInt, Sign};
use bigdecimal::{BigDecimal, Zero};
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// Minor units.
    Fixed(BigInt),
    /// Percent of the total (`12.5` for `"12.5%"`).
    Percent(BigDecimal),
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistributionError {
    #[error("distribution '{0}' is not a percentage, an amount or \"left\"")]
    Unreadable(String),
    #[error("only one leg may take the \"left\" amount")]
    SeveralLeft,
    #[error("percentages add up to more than 100%")]
    OverHundredPercent,
    #[error("fixed distributions add up to more than the amount")]
    FixedExceedsTotal,
    #[error("distributions do not cover the amount; add a \"left\" leg")]
    Uncovered,
    #[error("a split needs at least one leg")]
    Empty,
}

/// Reads one leg's `distribution` / `precise_distribution` (the precise one wins).
pub fn parse_share(
    distribution: Option<&str>,
    precise_distribution: Option<&str>,
    precision: &Precision,
) -> Result<Share, DistributionError> {
    let unreadable = |text: &str| DistributionError::Unreadable(text.to_owned());
    if let Some(precise) = precise_distribution
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if precise.eq_ignore_ascii_case("left") {
            return Ok(Share::Left);
        }
        let minor = BigInt::from_str(precise).map_err(|_| unreadable(precise))?;
        return non_negative(minor)
            .map(Share::Fixed)
            .ok_or_else(|| unreadable(precise));
    }
    let text = distribution.map(str::trim).unwrap_or_default();
    if text.eq_ignore_ascii_case("left") {
        return Ok(Share::Left);
    }
    if let Some(percent) = text.strip_suffix('%') {
        let value = BigDecimal::from_str(percent.trim()).map_err(|_| unreadable(text))?;
        if value.sign() == Sign::Minus || value > 100 {
            return Err(unreadable(text));
        }
        return Ok(Share::Percent(value));
    }
    let major = BigDecimal::from_str(text).map_err(|_| unreadable(text))?;
    if major.digits() > 80 {
        return Err(unreadable(text));
    }
    let minor = round_to_integer(major * BigDecimal::from(precision.as_bigint().clone()));
    non_negative(minor)
        .map(Share::Fixed)
        .ok_or_else(|| unreadable(text))
}

fn non_negative(value: BigInt) -> Option<BigInt> {
    (value.sign() != Sign::Minus).then_some(value)
}

/// The amount of each leg, in leg order (zero where a leg gets nothing).
pub fn split(total: &BigInt, shares: &[Share]) -> Result<Vec<BigInt>, DistributionError> {
    if shares.is_empty() {
        return Err(DistributionError::Empty);
    }
    if shares.iter().filter(|s| **s == Share::Left).count() > 1 {
        return Err(DistributionError::SeveralLeft);
    }
    let percent_sum: BigDecimal = shares
        .iter()
        .filter_map(|s| match s {
            Share::Percent(p) => Some(p.clone()),
            _ => None,
        })
        .sum();
    if percent_sum > 100 {
        return Err(DistributionError::OverHundredPercent);
    }
    let mut amounts = vec![BigInt::zero(); shares.len()];
    if total <= &BigInt::from(1) {
        amounts[0] = total.clone();
        return Ok(amounts);
    }
    let mut remaining = total.clone();
    for (index, share) in shares.iter().enumerate() {
        if let Share::Fixed(amount) = share {
            if amount > &remaining {
                return Err(DistributionError::FixedExceedsTotal);
            }
            remaining -= amount;
            amounts[index] = amount.clone();
        }
    }
    let total_decimal = BigDecimal::from(total.clone());
    let mut exact_sum = BigDecimal::zero();
    let mut largest_percent: Option<usize> = None;
    for (index, share) in shares.iter().enumerate() {
        if let Share::Percent(percent) = share {
            let exact = &total_decimal * percent / BigDecimal::from(100);
            amounts[index] = exact
                .with_scale_round(0, bigdecimal::RoundingMode::Floor)
                .into_bigint_and_exponent()
                .0;
            exact_sum += exact;
            let larger = |best: usize| match &shares[best] {
                Share::Percent(best_percent) => percent > best_percent,
                _ => false,
            };
            if largest_percent.is_none_or(larger) {
                largest_percent = Some(index);
            }
        }
    }
    let floored: BigInt = shares
        .iter()
        .zip(&amounts)
        .filter(|(s, _)| matches!(s, Share::Percent(_)))
        .map(|(_, a)| a.clone())
        .sum();
    let group_total = round_to_integer(exact_sum);
    if let Some(largest) = largest_percent {
        amounts[largest] += &group_total - &floored;
    }
    if group_total > remaining {
        return Err(DistributionError::FixedExceedsTotal);
    }
    remaining -= &group_total;
    match shares.iter().position(|s| *s == Share::Left) {
        Some(left) => amounts[left] = remaining,
        None if remaining.is_zero() => {}
        None => {
            // Only a rounding residue (under one unit per percentage leg) may be left over.
            let percent_legs = shares
                .iter()
                .filter(|s| matches!(s, Share::Percent(_)))
                .count();
            if remaining > BigInt::from(percent_legs) {
                return Err(DistributionError::Uncovered);
            }
            let largest = (0..amounts.len())
                .max_by(|a, b| amounts[*a].cmp(&amounts[*b]).then(b.cmp(a)))
                .unwrap_or(0);
            amounts[largest] += remaining;
        }
    }
    debug_assert_eq!(&amounts.iter().sum::<BigInt>(), total);
    Ok(amounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn int(value: i64) -> BigInt {
        BigInt::from(value)
    }

    fn pct(value: &str) -> Share {
        Share::Percent(BigDecimal::from_str(value).unwrap())
    }

    #[test]
    fn fixed_then_percent_then_left() {
        let shares = [Share::Fixed(int(100)), pct("50"), Share::Left];
        assert_eq!(
            split(&int(1000), &shares).unwrap(),
            vec![int(100), int(500), int(400)]
        );
    }

    #[test]
    fn thirds_give_the_rounding_residue_to_the_largest() {
        let shares = [pct("33.33"), pct("33.33"), pct("33.34")];
        let amounts = split(&int(100), &shares).unwrap();
        assert_eq!(amounts.iter().sum::<BigInt>(), int(100));
        assert_eq!(amounts, vec![int(33), int(33), int(34)]);
    }

    #[test]
    fn uncovered_and_overfull_splits_are_refused() {
        assert_eq!(
            split(&int(100), &[pct("50")]),
            Err(DistributionError::Uncovered)
        );
        assert_eq!(
            split(&int(100), &[pct("60"), pct("50")]),
            Err(DistributionError::OverHundredPercent)
        );
        assert_eq!(
            split(&int(100), &[Share::Fixed(int(150)), Share::Left]),
            Err(DistributionError::FixedExceedsTotal)
        );
        assert_eq!(
            split(&int(100), &[Share::Left, Share::Left]),
            Err(DistributionError::SeveralLeft)
        );
    }

    #[test]
    fn shares_are_parsed_like_blnk() {
        let precision = Precision::parse(Some("100")).unwrap();
        assert_eq!(
            parse_share(Some("10%"), None, &precision).unwrap(),
            pct("10")
        );
        assert_eq!(
            parse_share(Some("12.5"), None, &precision).unwrap(),
            Share::Fixed(int(1250))
        );
        assert_eq!(
            parse_share(Some("left"), None, &precision).unwrap(),
            Share::Left
        );
        assert_eq!(
            parse_share(Some("1%"), Some("1006"), &precision).unwrap(),
            Share::Fixed(int(1006))
        );
        assert!(parse_share(Some("-5"), None, &precision).is_err());
        assert!(parse_share(Some("abc"), None, &precision).is_err());
    }

    proptest! {
        /// A split always adds up to the total exactly.
        #[test]
        fn legs_add_up_to_the_total(total in 2i64..1_000_000, fixed in 0i64..1000, percents in proptest::collection::vec(0u32..40, 0..3)) {
            let mut shares = vec![Share::Fixed(int(fixed.min(total)))];
            shares.extend(percents.iter().map(|p| pct(&p.to_string())));
            shares.push(Share::Left);
            if let Ok(amounts) = split(&int(total), &shares) {
                prop_assert_eq!(amounts.iter().sum::<BigInt>(), int(total));
                prop_assert!(amounts.iter().all(|a| a.sign() != Sign::Minus));
            }
        }
    }
}
