"""`modelmonitor backtest`: replay a monitor's policies over Prometheus history with the operator's own path.

Modules: `history` (the past as the signals query it: range queries, instant queries where a range query cannot
express the signal), `replay` (reconcile at every step with the step's time as ``now``, the status carried from
step to step), `actions` (what the decisions would have run, behind the operator's rails), `report` (JSON, text,
PNG) and `cli`. Semantics and limits: docs/backtest.md.
"""
