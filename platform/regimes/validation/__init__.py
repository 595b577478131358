"""Validation of a trained model over its stored states (plan phase 8): dwell times,
transitions, posterior confidence, OOD rates, state-conditioned returns, a walk-forward
backtest, verdicts, and the self-contained HTML report that shows them."""
