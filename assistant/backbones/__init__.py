"""Backbone implementations, one per model library (built by assistant.factory)."""
