//! A user's wallet: recharges and debits that never make the balance negative or overflow.

use super::ids::IdSet;
use super::{Money, TokenId, UserId};

/// Why a wallet refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalletRefusal {
    /// Amount ≤ 0, above the per-charge limit, or a balance that would overflow.
    #[error("invalid recharge amount {amount}")]
    InvalidRechargeAmount { amount: i64 },
    #[error("not enough balance: {available} available, {requested} requested")]
    InsufficientFunds { available: Money, requested: Money },
    /// The wallet's user does not exist (a wallet actor found no row to load).
    #[error("user not found")]
    UserNotFound,
    /// The queue token a payment presents already paid for something (or is paying now): a
    /// token buys once, however many payments present it at the same moment.
    #[error("token expired")]
    TokenSpent,
}

/// The live balance of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub user: UserId,
    balance: Money,
    /// The tokens this wallet's payments spent since it was loaded. Before a payment commits,
    /// the waiting room still shows its token ACTIVE, so a second payment racing it would pass
    /// the token check; this set is what refuses it. (Once committed, the waiting room itself
    /// refuses the token, so a reload may start empty.)
    spent: IdSet<TokenId>,
}

impl Wallet {
    pub fn new(user: UserId, balance: Money) -> Wallet {
        Wallet {
            user,
            balance,
            spent: IdSet::default(),
        }
    }

    pub fn balance(&self) -> Money {
        self.balance
    }

    /// Adds `amount` (raw, as the client sent it) and returns the new balance.
    pub fn recharge(&mut self, raw: i64, max_recharge: Money) -> Result<Money, WalletRefusal> {
        let invalid = WalletRefusal::InvalidRechargeAmount { amount: raw };
        let amount = Money::new(raw).filter(|a| a.won() > 0 && *a <= max_recharge);
        let balance = amount
            .and_then(|a| self.balance.checked_add(a))
            .ok_or(invalid)?;
        // Money moves, it is never made: the new balance is the old one plus exactly `amount`.
        // (≥ 0 needs no assertion: `Money` cannot hold a negative sum.)
        debug_assert_eq!(
            i128::from(balance.won()),
            i128::from(self.balance.won()) + i128::from(raw),
            "a recharge adds exactly its amount"
        );
        self.balance = balance;
        Ok(balance)
    }

    /// A payment: takes `amount` out and spends `token`, or refuses without changing anything
    /// (the token is checked first: a spent token is refused whatever the balance).
    /// A waiting-list offer is paid without a token (`None`): its hold pays once by itself.
    pub fn pay(&mut self, token: Option<TokenId>, amount: Money) -> Result<Money, WalletRefusal> {
        if token.is_some_and(|t| self.spent.contains(&t)) {
            return Err(WalletRefusal::TokenSpent);
        }
        let balance = self.debit(amount)?;
        self.spent.extend(token);
        Ok(balance)
    }

    /// Puts a refunded `amount` back (API.md §12); refused only past what `Money` holds.
    pub fn credit(&mut self, amount: Money) -> Result<Money, WalletRefusal> {
        let balance =
            self.balance
                .checked_add(amount)
                .ok_or(WalletRefusal::InvalidRechargeAmount {
                    amount: amount.won(),
                })?;
        self.balance = balance;
        Ok(balance)
    }

    /// Gives `amount` back (a refund): the new balance, or a refusal if it would overflow.
    pub fn refund(&mut self, amount: Money) -> Result<Money, WalletRefusal> {
        let balance =
            self.balance
                .checked_add(amount)
                .ok_or(WalletRefusal::InvalidRechargeAmount {
                    amount: amount.won(),
                })?;
        self.balance = balance;
        Ok(balance)
    }

    /// Takes `amount` out, or refuses without changing anything.
    pub fn debit(&mut self, amount: Money) -> Result<Money, WalletRefusal> {
        let balance = self
            .balance
            .checked_sub(amount)
            .ok_or(WalletRefusal::InsufficientFunds {
                available: self.balance,
                requested: amount,
            })?;
        debug_assert_eq!(
            balance.won(),
            self.balance.won() - amount.won(),
            "a debit takes exactly its amount"
        );
        self.balance = balance;
        Ok(balance)
    }
}

/// A request to add money, parsed at the edge: whose wallet, and the amount as the client sent
/// it ([`Wallet::recharge`] decides whether it is a valid one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recharge {
    pub user: UserId,
    pub amount: i64,
}

/// A user to create, from the admin route, with their wallet's opening balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub balance: Money,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wallet(balance: i64) -> Wallet {
        Wallet::new(UserId::new(1).unwrap(), Money::new(balance).unwrap())
    }

    #[test]
    fn a_token_pays_once_and_a_refused_payment_spends_nothing() {
        let (first, second) = (TokenId::new(7).unwrap(), TokenId::new(8).unwrap());
        let mut w = wallet(100);
        assert_eq!(
            w.pay(Some(first), Money::new(500).unwrap()),
            Err(WalletRefusal::InsufficientFunds {
                available: Money::new(100).unwrap(),
                requested: Money::new(500).unwrap()
            }),
            "too expensive: refused, and the token stays unspent"
        );
        assert_eq!(
            w.pay(Some(first), Money::new(30).unwrap()).unwrap().won(),
            70
        );
        assert_eq!(
            w.pay(Some(first), Money::new(30).unwrap()),
            Err(WalletRefusal::TokenSpent)
        );
        assert_eq!(w.balance().won(), 70, "the refused payment took nothing");
        assert_eq!(
            w.pay(Some(second), Money::new(30).unwrap()).unwrap().won(),
            40
        );
    }

    #[test]
    fn recharge_limits() {
        let max = Money::new(1_000).unwrap();
        let mut w = wallet(0);
        assert!(w.recharge(0, max).is_err());
        assert!(w.recharge(-5, max).is_err());
        assert!(w.recharge(1_001, max).is_err());
        assert_eq!(w.recharge(1_000, max).unwrap().won(), 1_000);
        let mut rich = wallet(i64::MAX - 10);
        assert!(rich.recharge(11, Money::new(i64::MAX).unwrap()).is_err());
        assert_eq!(rich.balance().won(), i64::MAX - 10);
    }

    #[test]
    fn debit_refuses_without_change() {
        let mut w = wallet(100);
        assert!(matches!(
            w.debit(Money::new(101).unwrap()),
            Err(WalletRefusal::InsufficientFunds { .. })
        ));
        assert_eq!(w.balance().won(), 100);
        assert_eq!(w.debit(Money::new(100).unwrap()).unwrap(), Money::ZERO);
    }

    /// A refund's money comes back exactly, through either door (`credit` for the refund
    /// route, `refund` for a released offer), and an overflow is refused without change.
    #[test]
    fn a_refund_puts_back_exactly_its_amount_and_an_overflow_changes_nothing() {
        let amount = Money::new(250).unwrap();
        let mut w = wallet(100);
        assert_eq!(w.credit(amount).unwrap().won(), 350);
        assert_eq!(w.balance().won(), 350);
        assert_eq!(w.refund(amount).unwrap().won(), 600);
        assert_eq!(w.balance().won(), 600);
        let mut rich = wallet(i64::MAX - 10);
        let eleven = Money::new(11).unwrap();
        let refused = Err(WalletRefusal::InvalidRechargeAmount { amount: 11 });
        assert_eq!(rich.credit(eleven), refused);
        assert_eq!(rich.refund(eleven), refused);
        assert_eq!(rich.balance().won(), i64::MAX - 10);
        assert_eq!(
            rich.credit(Money::new(10).unwrap()).unwrap().won(),
            i64::MAX
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Recharge(i64),
        Debit(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<i64>().prop_map(Op::Recharge),
            (0..2_000_000i64).prop_map(Op::Recharge),
            (0..3_000_000i64).prop_map(Op::Debit),
        ]
    }

    proptest! {
        /// Whatever sequence of recharges and debits arrives, the balance always equals the
        /// sum of the accepted changes, and a change is refused exactly when the rules say so
        /// (a debit past the balance; a recharge ≤ 0, above the limit or overflowing). The
        /// `>= 0` check alone could not fail (`Money` refuses negatives): the evidence is the
        /// exact sum and the refusals.
        #[test]
        fn a_balance_never_goes_negative(start in 0..1_000_000i64, ops in prop::collection::vec(op(), 0..200)) {
            let max = Money::new(1_000_000).unwrap();
            let mut w = wallet(start);
            let mut expected = start as i128;
            for op in ops {
                let before = w.balance().won() as i128;
                match op {
                    Op::Recharge(a) => {
                        let valid = a > 0 && a <= max.won() && before + a as i128 <= i64::MAX as i128;
                        let answer = w.recharge(a, max);
                        prop_assert_eq!(answer.is_ok(), valid, "recharge {} on {}", a, before);
                        if let Ok(balance) = answer {
                            expected += a as i128;
                            prop_assert_eq!(balance.won() as i128, expected);
                        }
                    }
                    Op::Debit(a) => {
                        let answer = w.debit(Money::new(a).unwrap());
                        prop_assert_eq!(answer.is_ok(), a as i128 <= before, "debit {} of {}", a, before);
                        if let Ok(balance) = answer {
                            expected -= a as i128;
                            prop_assert_eq!(balance.won() as i128, expected);
                        }
                    }
                }
                prop_assert!(w.balance().won() >= 0);
                prop_assert_eq!(w.balance().won() as i128, expected);
            }
        }
    }
}
