"""Kafka -> Celery: the consumer loop batching feature events into write tasks; the producer."""
