"""The application layer: the Workspace (every location, from settings) and the typed
use cases the CLI, the demo, the Prefect flows and the HTTP service call.

The only part of ``regimes`` that reaches the engines (``regimes.jobs``,
``regimes.flows``), through :mod:`regimes.app.executors` and
:mod:`regimes.app.orchestrators`.
"""
