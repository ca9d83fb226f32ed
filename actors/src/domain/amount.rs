//! Exact money: integer minor units of any size, parsed from JSON text without floats.

use bigdecimal::num_bigint::{BigInt, Sign};
use bigdecimal::{BigDecimal, RoundingMode, Zero};
use std::fmt;
use std::str::FromStr;

/// Most digits a single amount may have. Larger inputs are refused, not truncated.
pub const AMOUNT_DIGITS_MAX: usize = 64;
/// Most digits a precision may have (10^36 covers every currency and token in use).
pub const PRECISION_DIGITS_MAX: usize = 37;
/// Decimal places shown when a minor amount does not divide evenly by its precision.
const MAJOR_SCALE_MAX: i64 = 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a number")]
    NotANumber,
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount has more than {AMOUNT_DIGITS_MAX} digits")]
    TooLarge,
    #[error("precise_amount must be an integer")]
    NotAnInteger,
    #[error("precision must be a whole number")]
    PrecisionNotInteger,
    #[error("precision must not be negative")]
    PrecisionNegative,
    #[error("precision has more than {PRECISION_DIGITS_MAX} digits")]
    PrecisionTooLarge,
}

/// A strictly positive integer amount in minor units.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(BigInt);

/// The multiplier from major to minor units (100 for cents). Always ≥ 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Precision(BigInt);

/// Parses JSON number text (`12`, `12.50`, `1e3`) exactly. Strings holding a number are
/// accepted as well, since the SDKs' types allow them.
fn parse_decimal(raw: &str) -> Result<BigDecimal, AmountError> {
    let text = raw.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim();
    let valid = !text.is_empty()
        && text.len() <= 2 * AMOUNT_DIGITS_MAX
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if !valid {
        return Err(AmountError::NotANumber);
    }
    let value = BigDecimal::from_str(text).map_err(|_| AmountError::NotANumber)?;
    // An exponent can still make a short text enormous ("1e999999"); bound it first.
    let (_, scale) = value.as_bigint_and_exponent();
    if scale < -(AMOUNT_DIGITS_MAX as i64) || scale > 2 * AMOUNT_DIGITS_MAX as i64 {
        return Err(AmountError::TooLarge);
    }
    Ok(value)
}

fn digits(value: &BigInt) -> usize {
    value.magnitude().to_str_radix(10).len()
}

impl Amount {
    pub fn new(value: BigInt) -> Result<Self, AmountError> {
        if value.sign() != Sign::Plus {
            return Err(AmountError::NotPositive);
        }
        if digits(&value) > AMOUNT_DIGITS_MAX {
            return Err(AmountError::TooLarge);
        }
        Ok(Self(value))
    }

    /// `precise_amount`: an integer number of minor units.
    pub fn parse_minor(raw: &str) -> Result<Self, AmountError> {
        let value = parse_decimal(raw)?;
        if !value.is_integer() {
            return Err(AmountError::NotAnInteger);
        }
        Self::new(value.with_scale(0).into_bigint_and_exponent().0)
    }

    /// `amount` in major units × `precision`, rounded half away from zero (Blnk's rule).
    pub fn parse_major(raw: &str, precision: &Precision) -> Result<Self, AmountError> {
        let value = parse_decimal(raw)?;
        if value.sign() == Sign::Minus {
            return Err(AmountError::NotPositive);
        }
        Self::new(round_to_integer(
            value * BigDecimal::from(precision.0.clone()),
        ))
    }

    pub fn as_bigint(&self) -> &BigInt {
        &self.0
    }

    pub fn into_bigint(self) -> BigInt {
        self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Rounds half away from zero to a whole number.
pub fn round_to_integer(value: BigDecimal) -> BigInt {
    value
        .with_scale_round(0, RoundingMode::HalfUp)
        .into_bigint_and_exponent()
        .0
}

impl Precision {
    pub fn one() -> Self {
        Self(BigInt::from(1))
    }

    /// Blnk's rule: absent or 0 means 1; otherwise a whole number.
    pub fn parse(raw: Option<&str>) -> Result<Self, AmountError> {
        let Some(raw) = raw else {
            return Ok(Self::one());
        };
        let value = parse_decimal(raw).map_err(|e| match e {
            AmountError::TooLarge => AmountError::PrecisionTooLarge,
            _ => AmountError::PrecisionNotInteger,
        })?;
        if value.sign() == Sign::Minus {
            return Err(AmountError::PrecisionNegative);
        }
        if !value.is_integer() {
            return Err(AmountError::PrecisionNotInteger);
        }
        let value = value.with_scale(0).into_bigint_and_exponent().0;
        Self::from_bigint(value)
    }

    pub fn from_bigint(value: BigInt) -> Result<Self, AmountError> {
        if value.sign() == Sign::Minus {
            return Err(AmountError::PrecisionNegative);
        }
        if digits(&value) > PRECISION_DIGITS_MAX {
            return Err(AmountError::PrecisionTooLarge);
        }
        if value.is_zero() {
            return Ok(Self::one());
        }
        Ok(Self(value))
    }

    pub fn as_bigint(&self) -> &BigInt {
        &self.0
    }

    /// Converts a minor amount to major units as exact decimal text when it divides evenly,
    /// otherwise to `MAJOR_SCALE_MAX` places (rounded half away from zero).
    pub fn to_major(&self, minor: &BigInt) -> String {
        let quotient = BigDecimal::from(minor.clone()) / BigDecimal::from(self.0.clone());
        let quotient = if quotient.fractional_digit_count() > MAJOR_SCALE_MAX {
            quotient.with_scale_round(MAJOR_SCALE_MAX, RoundingMode::HalfUp)
        } else {
            quotient
        };
        quotient.normalized().to_plain_string()
    }

    /// A major-unit limit (such as `overdraft_limit`) in minor units.
    pub fn major_to_minor(&self, raw: &str) -> Result<BigInt, AmountError> {
        let value = parse_decimal(raw)?;
        if value.sign() == Sign::Minus {
            return Err(AmountError::NotPositive);
        }
        let minor = round_to_integer(value * BigDecimal::from(self.0.clone()));
        if digits(&minor) > AMOUNT_DIGITS_MAX {
            return Err(AmountError::TooLarge);
        }
        Ok(minor)
    }
}

/// A signed decimal (a monitor's threshold), exactly: its normalized text and, scaled by
/// `precision`, its value in minor units rounded half away from zero.
pub fn scaled_decimal(raw: &str, precision: &Precision) -> Result<(String, BigInt), AmountError> {
    let value = parse_decimal(raw)?;
    let minor = round_to_integer(value.clone() * BigDecimal::from(precision.0.clone()));
    if digits(&minor) > AMOUNT_DIGITS_MAX {
        return Err(AmountError::TooLarge);
    }
    Ok((value.normalized().to_plain_string(), minor))
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> Precision {
        Precision::parse(Some(raw)).unwrap()
    }

    #[test]
    fn major_amounts_are_scaled_exactly() {
        assert_eq!(
            Amount::parse_major("12.34", &p("100")).unwrap().to_string(),
            "1234"
        );
        assert_eq!(
            Amount::parse_major("0.1", &p("1000")).unwrap().to_string(),
            "100"
        );
        assert_eq!(
            Amount::parse_major("1e3", &p("100")).unwrap().to_string(),
            "100000"
        );
    }

    #[test]
    fn major_amounts_round_half_away_from_zero() {
        assert_eq!(
            Amount::parse_major("1.005", &p("100")).unwrap().to_string(),
            "101"
        );
        assert_eq!(
            Amount::parse_major("1.004", &p("100")).unwrap().to_string(),
            "100"
        );
    }

    #[test]
    fn forty_digit_amounts_are_exact() {
        let raw = "1234567890123456789012345678901234567890";
        assert_eq!(Amount::parse_minor(raw).unwrap().to_string(), raw);
        let major = Amount::parse_major("12345678901234567890123456789012345678.91", &p("100"));
        assert_eq!(
            major.unwrap().to_string(),
            "1234567890123456789012345678901234567891"
        );
    }

    #[test]
    fn bad_amounts_are_refused() {
        assert_eq!(Amount::parse_minor("-5"), Err(AmountError::NotPositive));
        assert_eq!(Amount::parse_minor("0"), Err(AmountError::NotPositive));
        assert_eq!(Amount::parse_minor("1.5"), Err(AmountError::NotAnInteger));
        assert_eq!(Amount::parse_minor("abc"), Err(AmountError::NotANumber));
        assert_eq!(
            Amount::parse_minor("1e99999999"),
            Err(AmountError::TooLarge)
        );
        assert_eq!(
            Amount::parse_major("0.001", &p("100")),
            Err(AmountError::NotPositive)
        );
        assert_eq!(
            Amount::parse_minor(&"9".repeat(65)),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn precision_follows_blnk_rules() {
        assert_eq!(Precision::parse(None).unwrap(), Precision::one());
        assert_eq!(p("0"), Precision::one());
        assert_eq!(
            Precision::parse(Some("1.5")),
            Err(AmountError::PrecisionNotInteger)
        );
        assert_eq!(
            Precision::parse(Some("-1")),
            Err(AmountError::PrecisionNegative)
        );
    }

    #[test]
    fn signed_decimals_scale_exactly() {
        assert_eq!(
            scaled_decimal("-12.345", &p("100")).unwrap(),
            ("-12.345".to_owned(), BigInt::from(-1235))
        );
        assert_eq!(
            scaled_decimal("1e3", &p("100")).unwrap(),
            ("1000".to_owned(), BigInt::from(100_000))
        );
        assert_eq!(scaled_decimal("x", &p("1")), Err(AmountError::NotANumber));
    }

    #[test]
    fn minor_amounts_convert_back_to_major_text() {
        assert_eq!(p("100").to_major(&BigInt::from(1234)), "12.34");
        assert_eq!(p("100").to_major(&BigInt::from(1200)), "12");
        assert_eq!(p("3").to_major(&BigInt::from(1)), "0.333333333333333333");
    }
}
