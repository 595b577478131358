"""regimes.jobs: thin engine layer (see docs/architecture.md)."""
