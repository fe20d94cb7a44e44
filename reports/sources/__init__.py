"""Where a month's usage comes from, for the cost model: the ledger (and the monthly job
that bills the previous month), a simulation's output folder, or a synthetic month."""
