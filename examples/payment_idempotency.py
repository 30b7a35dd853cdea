"""Charge each customer exactly once, even when the crash comes at the worst moment.

A step runs again when the process dies before its result is recorded; for a payment
that window lies between "the provider charged the card" and "duravoke wrote the
record". ``duravoke.idempotency_key()`` closes it: the key is the same on every re-run
of the step, and the provider (faked here, deduplicating like Stripe does) returns the
original charge instead of charging twice.

    python examples/payment_idempotency.py
"""

from __future__ import annotations

import json
from pathlib import Path

from _crash import crash_point, executing, log, returned

import duravoke

CUSTOMERS = list(range(10))
LEDGER = Path("payments_ledger.jsonl")


class FakePaymentAPI:
    """A payment provider in a file: one JSON line per charge it made.

    A request with an idempotency key seen before makes no new charge: it returns the
    charge made the first time, and refuses the key if the parameters differ.
    """

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger

    def charges(self) -> list[dict[str, object]]:
        """Every charge made so far."""
        if not self.ledger.exists():
            return []
        lines = self.ledger.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def charge(self, customer_id: int, amount_cents: int, *, idempotency_key: str) -> str:
        """Charge a customer; return the charge id."""
        charges = self.charges()
        for charge in charges:
            if charge["idempotency_key"] == idempotency_key:
                if (charge["customer"], charge["amount"]) != (customer_id, amount_cents):
                    raise ValueError("idempotency key reused with different parameters")
                log(f"dedup charge {customer_id}")
                print(f"  payment API: key seen before, no new charge, returning {charge['id']}")
                return str(charge["id"])
        charge = {
            "id": f"ch_{len(charges) + 1:04d}",
            "customer": customer_id,
            "amount": amount_cents,
            "idempotency_key": idempotency_key,
        }
        with self.ledger.open("a", encoding="utf-8") as f:
            f.write(json.dumps(charge) + "\n")
        return str(charge["id"])


api = FakePaymentAPI(LEDGER)


@duravoke.duravoke
def charge(customer_id: int, amount_cents: int) -> str:
    """Charge one customer through the payment API; return the charge id."""
    executing("charge", customer_id)
    key = duravoke.idempotency_key()  # the same on every re-run of this very step
    crash_point("charge", customer_id)
    charge_id = api.charge(customer_id, amount_cents, idempotency_key=key)
    # The worst moment to die: the card is charged, the step's record not yet written.
    # The re-run calls the API again with the same key, and nobody pays twice.
    crash_point("charge", customer_id)
    return charge_id


@duravoke.duravoke
def charge_all(customer_ids: list[int]) -> list[str]:
    """Charge every customer; return the charge ids in order."""
    charge_ids = []
    for customer_id in customer_ids:
        charge_ids.append(charge(customer_id, 1000 + 250 * customer_id))
        returned("charge", customer_id)
        crash_point("charge", customer_id)
    return charge_ids


if __name__ == "__main__":
    charge_ids = charge_all(CUSTOMERS)
    for customer_id, charge_id in zip(CUSTOMERS, charge_ids, strict=True):
        print(f"charged customer {customer_id}: {charge_id}")
    print(f"done: {len(charge_ids)} customers charged, {len(api.charges())} charges in ledger")
