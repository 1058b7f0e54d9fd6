//! Immediate entries: credits and debits posted at once, with no hold before them
//! (recharges, balance refunds, a wallet's debit and the points it earns). Each is a leg
//! in state `Done`, which a void can still reverse.

use super::{Balance, EntryType, Ledger, LedgerError, Leg};
use crate::journal::Step;

impl Ledger {
    /// Money in, posted at once (recharge). Idempotent by `leg`.
    pub async fn credit(
        &self,
        account: &str,
        amount: i64,
        leg: &str,
    ) -> Result<Balance, LedgerError> {
        self.immediate(Step::new(), account, amount, leg, EntryType::Credit)
            .await
    }

    /// Money out at once (balance refund to the holder). Idempotent by `leg`.
    pub async fn debit(
        &self,
        account: &str,
        amount: i64,
        leg: &str,
    ) -> Result<Balance, LedgerError> {
        self.immediate(Step::new(), account, amount, leg, EntryType::Debit)
            .await
    }

    /// As [`Ledger::debit`], in one step with the caller's writes (a card closed by the
    /// refund of its balance, say). A repeat of the leg writes nothing, not even those.
    pub async fn debit_with(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg: &str,
    ) -> Result<Balance, LedgerError> {
        self.immediate(step, account, amount, leg, EntryType::Debit)
            .await
    }

    /// As [`Ledger::debit_with`], with a credit to another account in the same step (the
    /// points a purchase earns): both or neither. `credit` is (account, amount, leg).
    pub async fn debit_crediting(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg_id: &str,
        credit: (&str, i64, &str),
    ) -> Result<Balance, LedgerError> {
        let (credit_account, credit_amount, credit_leg) = credit;
        let legs = [
            (leg_id, Leg::immediate(account, amount, EntryType::Debit)),
            (
                credit_leg,
                Leg::immediate(credit_account, credit_amount, EntryType::Credit),
            ),
        ];
        self.place_all(step, &legs).await
    }

    async fn immediate(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg_id: &str,
        kind: EntryType,
    ) -> Result<Balance, LedgerError> {
        self.place(step, leg_id, Leg::immediate(account, amount, kind))
            .await
    }
}
