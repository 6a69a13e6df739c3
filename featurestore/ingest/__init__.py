"""Ingest: feature events and files validated, and the write-batch format for the DuckDB
service."""
