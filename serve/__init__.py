"""regimes.serve: thin engine layer (see docs/architecture.md)."""
