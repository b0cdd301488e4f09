"""Durable state, apart from the Celery worker: what the backend, the agent, the CLI and the workers share.

- :mod:`state.settings`: the process settings (``ASSISTANT_*``), read nowhere else;
- :mod:`state.contracts`: task names, queues and the pydantic payloads sent to the workers;
- :mod:`state.registry`: model versions and which one each project serves;
- :mod:`state.ledger`, :mod:`state.effort` (with ``effort_records``, ``effort_summary`` and
  ``effort_upkeep``): the corrections ledger and the effort ledger beside it;
- :mod:`state.decision_log`: the agent's append-only decision log (its one store; the dashboard reads it too);
- :mod:`state.sqlstore`: the one SQL store (SQLite or PostgreSQL) under the ledgers and the log;
- :mod:`state.locks`: the round locks in Redis, and :func:`state.locks.redis_url`, the one place
  that picks the Redis the shared state lives in;
- :mod:`state.round_log`: the round log (one line per finished or failed round), its one reader;
- :mod:`state.schedule`, :mod:`state.metrics`, :mod:`state.logs`, :mod:`state.model_info`.

Light on purpose (no torch, no Celery task module; an import contract says so): the web process
imports it. Kept empty: importing one module must not import the others.
"""
