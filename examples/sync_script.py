"""Charge customers: a plain sync script made durable with the module-level decorator.

``charge_customers`` calls ``charge`` once per customer. Kill the script at any point
and run it again: customers whose charge was recorded are not charged again, the rest
are. State goes to the default store ($DURAVOKE_HOME, or the user state folder).

    python examples/sync_script.py
"""

from __future__ import annotations

from _crash import crash_point, executing, returned

import duravoke

CUSTOMERS = list(range(10))


@duravoke.duravoke
def charge(customer_id: int) -> str:
    """Charge one customer (the side effect) and return the receipt number."""
    executing("charge", customer_id)  # a real script would call the payment API here
    crash_point("charge", customer_id)  # charged, but not recorded yet: it may run again
    return f"receipt-{customer_id:04d}"


@duravoke.duravoke
def charge_customers(customer_ids: list[int]) -> list[str]:
    """Charge every customer; the parent step of the ``charge`` steps."""
    receipts = []
    for customer_id in customer_ids:
        receipts.append(charge(customer_id))
        # Once charge() has returned, its result is on disk: it will never run again.
        returned("charge", customer_id)
        crash_point("charge", customer_id)
    return receipts


if __name__ == "__main__":
    receipts = charge_customers(CUSTOMERS)
    for customer_id, receipt in zip(CUSTOMERS, receipts, strict=True):
        print(f"charged customer {customer_id}: {receipt}")
    print(f"done: {len(receipts)} customers charged")
