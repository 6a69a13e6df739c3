"""Azurite start-up, the container, and a blob upload/download round trip."""

from __future__ import annotations

import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from featurestore.errors import ConfigError, ServiceError
from featurestore.services import AzuriteService, ManagedService
from featurestore.services.azurite import parse_connection_string
from featurestore.settings import Settings

pytestmark = pytest.mark.integration


def test_upload_download_round_trip(azurite_service: ManagedService, settings: Settings) -> None:
    status = azurite_service.ensure()
    assert status.reachable and not status.started
    assert status.version == settings.azurite_version
    client = BlobServiceClient.from_connection_string(settings.azure_connection_string)
    container = client.get_container_client(settings.azure_container)
    assert container.exists()
    name = f"test/{uuid.uuid4()}.bin"
    data = uuid.uuid4().bytes * 1000
    container.upload_blob(name, data)
    assert container.download_blob(name).readall() == data


def test_real_azure_account_is_never_started(settings: Settings) -> None:
    remote = AzuriteService(
        settings.model_copy(
            update={
                "azure_connection_string": (
                    "DefaultEndpointsProtocol=https;AccountName=nosuchaccount;"
                    "AccountKey=a2V5;EndpointSuffix=invalid"
                )
            }
        )
    )
    assert remote.address == "https://nosuchaccount.blob.invalid"
    assert not remote.is_local()
    with pytest.raises(ServiceError, match="not local"):
        remote.ensure()


def test_malformed_connection_string_names_the_part() -> None:
    with pytest.raises(ConfigError, match="'BlobEndpoint'"):
        parse_connection_string("AccountName=x;BlobEndpoint")
