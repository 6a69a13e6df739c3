"""Start-up functions of the backing services, one module per service."""

from __future__ import annotations

from featurestore.services.alertmanager import AlertmanagerService
from featurestore.services.azurite import AzuriteService
from featurestore.services.base import ManagedService, ServiceStatus
from featurestore.services.exporters import RedisExporterService
from featurestore.services.kafka import KafkaService
from featurestore.services.prometheus import PrometheusService
from featurestore.services.redis import RedisService
from featurestore.settings import Settings

__all__ = [
    "AlertmanagerService",
    "AzuriteService",
    "KafkaService",
    "ManagedService",
    "PrometheusService",
    "RedisExporterService",
    "RedisService",
    "ServiceStatus",
    "all_services",
    "ensure_all",
    "ensure_azure",
    "ensure_kafka",
    "ensure_redis",
]


def all_services(settings: Settings) -> list[ManagedService]:
    """Every backing service, in start order."""
    return [RedisService(settings), KafkaService(settings), AzuriteService(settings)]


def ensure_kafka(settings: Settings) -> ServiceStatus:
    """Make sure a Kafka broker answers at settings.kafka_bootstrap and the topics exist."""
    return KafkaService(settings).ensure()


def ensure_redis(settings: Settings) -> ServiceStatus:
    """Make sure Redis answers at settings.redis_url."""
    return RedisService(settings).ensure()


def ensure_azure(settings: Settings) -> ServiceStatus:
    """Make sure blob storage answers and the container exists."""
    return AzuriteService(settings).ensure()


def ensure_all(settings: Settings) -> list[ServiceStatus]:
    """Make sure every backing service answers."""
    return [service.ensure() for service in all_services(settings)]
