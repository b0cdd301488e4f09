"""The Celery worker: the app, thin tasks, the model runtime, the pipeline, media and the feature cache.

What the backend and the agent share with the workers (settings, contracts, registry, ledgers,
locks, metrics) lives in :mod:`state`. Kept empty on purpose: importing ``workers.celery_app``
must not pull in the tasks or torch.
"""
