"""The Label Studio ML backend (FastAPI). Never imports torch, open_clip or ``assistant``."""
