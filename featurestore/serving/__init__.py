"""Serving: production models synced from Azure Blob Storage, their runtime, and Predict."""
