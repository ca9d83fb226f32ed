//! Balance monitors: a threshold on one of a balance's six amounts. Firing them (a
//! `balance.monitor` event after a commit crosses one) belongs to the events work; this is
//! the condition and its exact test.
//!
//! `precise_value` is the threshold in minor units: `value × precision`, computed exactly from
//! the decimal text of `value` (Blnk multiplies floats and truncates to an `int64`), rounded
//! half away from zero like transaction amounts.

use super::amount::{scaled_decimal, Precision};
use super::BalanceAmounts;
use bigdecimal::num_bigint::BigInt;
use std::cmp::Ordering;

/// The balance amount a monitor watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorField {
    Balance,
    CreditBalance,
    DebitBalance,
    InflightBalance,
    InflightCreditBalance,
    InflightDebitBalance,
}

impl MonitorField {
    pub const ALL: [MonitorField; 6] = [
        Self::DebitBalance,
        Self::CreditBalance,
        Self::Balance,
        Self::InflightDebitBalance,
        Self::InflightCreditBalance,
        Self::InflightBalance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Balance => "balance",
            Self::CreditBalance => "credit_balance",
            Self::DebitBalance => "debit_balance",
            Self::InflightBalance => "inflight_balance",
            Self::InflightCreditBalance => "inflight_credit_balance",
            Self::InflightDebitBalance => "inflight_debit_balance",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.as_str() == text)
    }

    pub fn of(self, amounts: &BalanceAmounts) -> BigInt {
        match self {
            Self::Balance => amounts.balance(),
            Self::CreditBalance => amounts.credit.clone(),
            Self::DebitBalance => amounts.debit.clone(),
            Self::InflightBalance => amounts.inflight_balance(),
            Self::InflightCreditBalance => amounts.inflight_credit.clone(),
            Self::InflightDebitBalance => amounts.inflight_debit.clone(),
        }
    }
}

/// How the amount compares with the threshold. Blnk stores `=`; `==` is read as `=` (Blnk's
/// evaluator knew only `==` while its database allowed only `=`, so its equality monitors
/// never fired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorOperator {
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
    Equal,
    NotEqual,
}

impl MonitorOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::Less => "<",
            Self::GreaterOrEqual => ">=",
            Self::LessOrEqual => "<=",
            Self::Equal => "=",
            Self::NotEqual => "!=",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            ">" => Self::Greater,
            "<" => Self::Less,
            ">=" => Self::GreaterOrEqual,
            "<=" => Self::LessOrEqual,
            "=" | "==" => Self::Equal,
            "!=" => Self::NotEqual,
            _ => return None,
        })
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Greater => ordering == Ordering::Greater,
            Self::Less => ordering == Ordering::Less,
            Self::GreaterOrEqual => ordering != Ordering::Less,
            Self::LessOrEqual => ordering != Ordering::Greater,
            Self::Equal => ordering == Ordering::Equal,
            Self::NotEqual => ordering != Ordering::Equal,
        }
    }
}

/// A monitor's checked condition.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorCondition {
    pub field: MonitorField,
    pub operator: MonitorOperator,
    /// `value` as exact, normalized decimal text (major units).
    pub value: String,
    pub precision: Precision,
    /// `value × precision` in minor units.
    pub precise_value: BigInt,
}

impl MonitorCondition {
    /// Checks a condition as given (raw JSON number texts for `value` and `precision`);
    /// the problems are Blnk's `field: reason` texts, in field order.
    pub fn parse(
        field: Option<&str>,
        operator: Option<&str>,
        value: Option<&str>,
        precision: Option<&str>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let field = match field.filter(|f| !f.is_empty()) {
            None => {
                problems.push("field: cannot be blank".to_owned());
                None
            }
            Some(text) => MonitorField::parse(text).or_else(|| {
                problems.push(format!(
                    "field: must be one of {}",
                    MonitorField::ALL.map(MonitorField::as_str).join(", ")
                ));
                None
            }),
        };
        let operator = match operator.filter(|o| !o.is_empty()) {
            None => {
                problems.push("operator: cannot be blank".to_owned());
                None
            }
            Some(text) => MonitorOperator::parse(text).or_else(|| {
                problems.push("operator: must be one of >, <, >=, <=, =, !=".to_owned());
                None
            }),
        };
        let precision = match precision.map(str::trim) {
            None | Some("0") | Some("null") => {
                problems.push("precision: cannot be blank".to_owned());
                None
            }
            Some(raw) => Precision::parse(Some(raw))
                .map_err(|e| problems.push(format!("precision: {e}")))
                .ok(),
        };
        // Checked even when the precision is not, so every problem is named at once.
        let scale = precision.clone().unwrap_or_else(Precision::one);
        let scaled = match value.map(str::trim) {
            None | Some("null") => {
                problems.push("value: cannot be blank".to_owned());
                None
            }
            Some(raw) => match scaled_decimal(raw, &scale) {
                Ok((text, _)) if text == "0" => {
                    problems.push("value: cannot be blank".to_owned());
                    None
                }
                Ok(scaled) => Some(scaled),
                Err(error) => {
                    problems.push(format!("value: {error}"));
                    None
                }
            },
        };
        match (field, operator, precision, scaled) {
            (Some(field), Some(operator), Some(precision), Some((value, precise_value)))
                if problems.is_empty() =>
            {
                Ok(Self {
                    field,
                    operator,
                    value,
                    precision,
                    precise_value,
                })
            }
            _ => Err(problems),
        }
    }

    /// Whether a balance with these amounts meets the condition.
    pub fn is_met(&self, amounts: &BalanceAmounts) -> bool {
        self.operator
            .holds(self.field.of(amounts).cmp(&self.precise_value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(field: &str, operator: &str, value: &str, precision: &str) -> MonitorCondition {
        MonitorCondition::parse(Some(field), Some(operator), Some(value), Some(precision)).unwrap()
    }

    #[test]
    fn the_precise_value_is_exact() {
        let c = condition("balance", ">", "12.34", "100");
        assert_eq!(c.precise_value, BigInt::from(1234));
        let big = condition("balance", ">", "123456789012345678901234567890.12", "100");
        assert_eq!(
            big.precise_value.to_string(),
            "12345678901234567890123456789012"
        );
        assert_eq!(
            condition("balance", "<", "-5", "1").precise_value,
            BigInt::from(-5)
        );
    }

    #[test]
    fn every_operator_compares_and_equality_fires() {
        let amounts = BalanceAmounts {
            credit: BigInt::from(1500),
            ..BalanceAmounts::default()
        };
        for (operator, met) in [
            (">", false),
            ("<", false),
            (">=", true),
            ("<=", true),
            ("=", true),
            ("==", true),
            ("!=", false),
        ] {
            assert_eq!(
                condition("credit_balance", operator, "15", "100").is_met(&amounts),
                met,
                "{operator}"
            );
        }
        assert!(condition("debit_balance", "<", "1", "1").is_met(&amounts));
    }

    #[test]
    fn bad_conditions_name_every_problem() {
        let problems = MonitorCondition::parse(Some("nope"), None, Some("0"), None).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            MonitorCondition::parse(Some("balance"), Some(">"), Some("ten"), Some("1")).is_err()
        );
        assert!(MonitorCondition::parse(Some("balance"), Some("~"), Some("1"), Some("1")).is_err());
        assert!(
            MonitorCondition::parse(Some("balance"), Some(">"), Some("1"), Some("-1")).is_err()
        );
    }
}
