//! Money: a non-negative number of won in an `i64`, with checked arithmetic only.

use serde::Serialize;
use std::fmt;

/// An amount of won, never negative. There is no float anywhere near money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(into = "i64")]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    /// `None` for a negative amount.
    pub fn new(won: i64) -> Option<Money> {
        (won >= 0).then_some(Money(won))
    }

    pub fn won(self) -> i64 {
        self.0
    }

    /// `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `None` when the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        Money::new(self.0 - other.0)
    }

    /// How much is missing to pay `price` from `self`.
    pub fn shortfall(self, price: Money) -> Money {
        Money(price.0.saturating_sub(self.0).max(0))
    }
}

impl From<Money> for i64 {
    fn from(money: Money) -> i64 {
        money.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} won", self.0)
    }
}

impl Money {
    /// The sum of `amounts`; `None` on overflow.
    pub fn sum(amounts: impl IntoIterator<Item = Money>) -> Option<Money> {
        amounts
            .into_iter()
            .try_fold(Money::ZERO, Money::checked_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_never_negative() {
        assert_eq!(Money::new(-1), None);
        assert_eq!(
            Money::new(5).unwrap().checked_sub(Money::new(6).unwrap()),
            None
        );
        assert_eq!(
            Money::new(i64::MAX)
                .unwrap()
                .checked_add(Money::new(1).unwrap()),
            None
        );
    }

    #[test]
    fn shortfall_is_zero_when_enough() {
        let ten = Money::new(10).unwrap();
        let four = Money::new(4).unwrap();
        assert_eq!(ten.shortfall(four), Money::ZERO);
        assert_eq!(four.shortfall(ten).won(), 6);
    }
}
