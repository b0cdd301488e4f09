"""The project dashboard at ``/ui``: what the assistant is doing and what it saves (``docs/dashboard.md``).

Server-rendered pages (FastAPI + Jinja2) behind the backend's Basic auth, importable without
torch (import-linter checks it):

- ``data.py``: the data-access functions (registry, round log, effort ledger, Redis);
- ``decisions.py``: the decision log, one page at a time, and the audit of promote/rollback;
- ``views.py``: the pure view models of the five pages;
- ``web.py``: the routes, templates and static files.
"""
