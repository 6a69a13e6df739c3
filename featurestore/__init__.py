"""Feature store and model server: Kafka -> Celery -> DuckDB, models from Redis over gRPC."""

__version__ = "0.1.0"
