"""Store: the DuckDB service (single writer, latest-values merger, reads run here), the
Redis online store, the model registry and training sets."""
