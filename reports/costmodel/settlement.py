"""Settlement: what members pay each other at the end of the month."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import pandas as pd

from reports.costmodel.money import ZERO, cents

Cells = dict[tuple[str, str], Decimal]
"""(payer, payee) -> amount in cents."""


def others_hardware_charges(charged_exact: Mapping[tuple[str, str], Decimal]) -> Cells:
    """(user, owner) -> the charge for use of the owner's hardware beyond the user's
    purchased GPUs, in cents: paid to the owner, whatever the user's entitlement."""
    return {k: cents(v) for k, v in charged_exact.items() if k[0] != k[1] and v}


def settlement_cells(charges: Cells, purchases: Cells) -> Cells:
    """`settlement[payer, payee]` = charges for use of the payee's hardware + purchase
    payments to the payee."""
    settlement: Cells = {}
    for cells in (charges, purchases):
        for key, value in cells.items():
            settlement[key] = settlement.get(key, ZERO) + value
    return settlement


def settlement_matrix(settlement: Cells, members: list[str]) -> pd.DataFrame:
    """payer (index) x payee (columns)."""
    return pd.DataFrame(
        [[settlement.get((p, q), ZERO) for q in members] for p in members],
        index=pd.Index(members, name="payer"),
        columns=pd.Index(members, name="payee"),
    )


def net_transfers(settlement: Cells, members: list[str]) -> pd.DataFrame:
    """payer, payee, amount: the pairwise net (A owes B minus B owes A), what actually
    changes hands."""
    rows = []
    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            diff = settlement.get((a, b), ZERO) - settlement.get((b, a), ZERO)
            if diff > 0:
                rows.append({"payer": a, "payee": b, "amount": diff})
            elif diff < 0:
                rows.append({"payer": b, "payee": a, "amount": -diff})
    return pd.DataFrame(rows, columns=["payer", "payee", "amount"])
