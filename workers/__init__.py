"""The Celery edge: contracts, app, model runtime and thin tasks.

Kept empty on purpose: importing ``workers.contracts`` must not pull in the tasks or torch.
"""
