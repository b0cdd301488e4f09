"""The project dashboard at ``/ui``: what the assistant is doing and what it saves (``docs/dashboard.md``).

Server-rendered pages (FastAPI + Jinja2) behind the backend's Basic auth, importable without
torch (import-linter checks it):

- ``data.py``: the data-access functions (registry, round log, effort ledger, Redis; the decision
  log through its one store, :mod:`state.decision_log`, as the agent reads it);
- ``views/``: the pure view models, one module per page;
- ``web.py``: the routes, templates and static files.
"""
