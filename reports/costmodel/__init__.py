"""The cost model (pure): a month of usage and capacity becomes invoices and a settlement.

How the bill is built (the same for metered and simulated usage), one module per step,
in the order `build.build_month_report` runs them; the words are the glossary's
(docs/glossary.md):

- **Price** (`prices`). Every GPU-hour is priced at its GPU model's `hourlyCost` in the
  policy version in force in that hour (`PriceBook.price(model, version)`); an hour's
  version is the newest one its usage rows name, else the current policy's.
- **Owners** (`unowned`). A node's owner that is no member of the policy version in force
  in the hour (a typo in its label, a member removed) makes it unowned, as for the
  scheduler: billed as `unattributed`, like a node without the label, and flagged.
- **Usage split** (`usage_split`). Use on a member's own nodes costs nothing extra (it is
  inside its capacity cost). GPU-hours **used on others' hardware** (a member's pods on
  nodes another member owns) are first counted against the user's *purchased* GPUs of
  that model in that hour; the rest is charged to the user at the GPU model's price and
  credited to the owner as **lent**. This is about where pods ran, not about entitlement:
  it is charged whether or not the user was within its entitlement, so a member that
  only swaps nodes with another nets to zero (its lent credit offsets the charge). The
  glossary's *borrowed* (allocation above entitlement) plays no part in the bill.
- **Capacity cost and idle** (`capacity`). Each owner's contributed capacity (available
  GPU-seconds, or the GPU-seconds used on its nodes if more were reported) at price. The
  pool's cost is the capacity cost of every owner plus the shared fixed costs. **Idle**
  capacity (used by no one) under `billing.idleCost`: `owner` - the owner bears it (it
  stays in its capacity cost); `by-contribution` / `by-usage` - each owner's idle
  capacity cost is returned to a pool that is split by contributed GPU-hours / GPU-hours
  used.
- **Purchased GPUs** (`purchases`). A member with purchased GPUs pays them whole: GPUs x
  hours of the month x price, paid to the other owners of that GPU model in proportion
  to their contributed GPU-hours of that model (they host the purchased entitlement).
  Use within the purchase is not charged again. A purchase of a model no other member
  contributes is not billed (there is no one to serve it) and is flagged.
- **Settlement** (`settlement`). `settlement[payer][payee]` = charges for use of the
  payee's hardware + purchase payments; each member's net settlement = what it receives
  - what it pays; the pairwise net (A owes B minus B owes A) is what actually changes
  hands.
- **Shared fixed costs** (`shared`): each `monthlyAmount` split `equal` (policy members),
  `by-contribution`, `by-usage` (falling back to contribution, then equal, when nobody
  contributed or used anything) or by `fixed` shares.
- **Invoices** (`invoices`): per member, its capacity cost, one line per owner and GPU
  model whose hardware it used (GPU-hours, rate, amount), one credit line per member
  and GPU model that used its nodes (lent), purchases, idle capacity, shared costs, and
  information lines. GPU-hours **lost to reclaim** are shown with their value at price,
  for information only: they were already billed as use, billing them again would
  double-count.
- **Lent and purchase net** (summary column `lent_and_purchase_net_money`): a member's
  lent credits, plus the value at price of what it used within its purchase, minus the
  purchase (use of others' hardware is charged at price, so it adds no money either
  way). The **pooling dividend** (summary column `pooling_dividend_gpu_hours`, the
  simulator's figure from its summary.json, see docs/metrics.md) is shown beside it when
  the usage comes from a simulation, and is empty otherwise.
- **Tables** (`tables`): GPU-hours per day, utilization, entitlement against use, who
  used whose hardware, the pool's facts (`report.MonthReport` holds them all).

Rounding is described in `money`: every whole is conserved, so member totals add up to
the pool's cost and the settlement nets to zero, to the cent.
"""

from reports.costmodel.build import build_month_report
from reports.costmodel.prices import PriceBook
from reports.costmodel.report import ROUNDING_RULE, MonthReport, NoDataError, check_invariants

__all__ = [
    "ROUNDING_RULE",
    "MonthReport",
    "NoDataError",
    "PriceBook",
    "build_month_report",
    "check_invariants",
]
