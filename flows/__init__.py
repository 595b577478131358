"""regimes.flows: thin engine layer (see docs/architecture.md)."""
