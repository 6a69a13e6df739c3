"""Model sync and Azure: artifacts in several containers, names outside the naming rule,
streamed downloads, and an unreachable Azure (nothing served removed, the task fails)."""

from __future__ import annotations

import socket

import pytest
from azure.storage.blob import BlobServiceClient

from featurestore import constants
from featurestore.errors import ArtifactError, ServiceError
from featurestore.serving import artifacts, manifest
from tasks.model_sync_tasks import ModelSyncTask
from tasks.model_sync_tasks import sync_models as sync_task
from tasks.model_sync_worker import SyncResources
from tests.serving.sync_env import WEIGHTS_V2, SyncEnv, classifier, env, metric, scaler

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture


def test_artifacts_registered_in_two_containers_are_both_synced(env: SyncEnv) -> None:
    env.upload("model_production.onnx", classifier(), container=0)
    env.upload("scaler_production.json", scaler(), container=1)
    env.register("1.0.0", "model", container=0)
    env.register("1.0.0", "scaler", container=1)
    env.promote("1.0.0")

    report = env.sync()

    assert report.published == [env.model_id]
    served = manifest.read_manifest(env.client, env.model_id)
    assert served is not None
    assert {ext: a.container for ext, a in served.artifacts.items()} == {
        "onnx": env.container(0),
        "json": env.container(1),
    }


def test_download_streams_in_pieces_and_refuses_past_the_limit(env: SyncEnv) -> None:
    data = bytes(range(256)) * 40  # 10 KiB, ten 1 KiB gets
    etag = env.upload("model_production.onnx", data)
    [ref] = artifacts.list_production(env.blobs, env.container(), env.model_id)
    small = artifacts.blob_client(env.settings, retries=0, chunk_bytes=1024)
    try:
        assert artifacts.download(small, ref, max_bytes=len(data)) == (data, etag)
        with pytest.raises(ArtifactError, match="over max_artifact_bytes=4096") as caught:
            artifacts.download(small, ref, max_bytes=4096)
        assert caught.value.reason == "too_large"
        env.delete("model_production.onnx")
        with pytest.raises(ArtifactError) as gone:
            artifacts.download(small, ref, max_bytes=len(data))
        assert gone.value.reason == "missing_artifact"
    finally:
        small.close()


def _closed_port_client(env: SyncEnv) -> BlobServiceClient:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = env.settings.azure_connection_string.split("BlobEndpoint=http://127.0.0.1:")[1]
    unreachable = env.settings.model_copy(
        update={
            "azure_connection_string": env.settings.azure_connection_string.replace(
                url.split("/")[0], str(port)
            )
        }
    )
    return artifacts.blob_client(unreachable, retries=0)


def test_azure_unreachable_keeps_everything_served(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    served_before = manifest.read_published(env.client, m)
    down = _closed_port_client(env)

    report = env.sync(blobs=down)

    assert report.failed == {m: "azure_unreachable"} and report.azure_unreachable
    assert report.served == [m] and report.removed == []
    assert manifest.read_published(env.client, m) == served_before
    status = manifest.read_status(env.client, m)
    assert status is not None
    assert (status.last_error_reason, status.rejected_version) == ("azure_unreachable", None)
    assert metric("fstore_model_sync_failures_total", model=m, reason="azure_unreachable") >= 1

    # The worker's task reports the failure (Celery marks it FAILURE), nothing removed.
    ModelSyncTask.attach(SyncResources(env.reader, down, env.client, env.settings))
    try:
        with pytest.raises(ServiceError, match=f"could not be listed for {m}"):
            sync_task()
    finally:
        ModelSyncTask.attach(None)
        down.close()
    assert manifest.read_published(env.client, m) == served_before

    assert env.sync().unchanged == [m]  # Azure back: served as before, status clean again
    status = manifest.read_status(env.client, m)
    assert status is not None and status.last_error_reason is None


def test_demotion_applies_while_azure_is_unreachable(env: SyncEnv) -> None:
    env.serve_v1()
    other = f"{env.model_id}_b"
    env.upload_raw(f"{other}/model_production.onnx", classifier())
    env.register("1.0.0", model_id=other)
    env.promote("1.0.0", model_id=other)
    assert env.sync().published == [other]
    env.archive("1.0.0", model_id=other)

    report = env.sync(blobs=_closed_port_client(env))

    # Archiving is the registry's word, Azure is not needed for it; the model still in
    # production stays served.
    assert report.removed == [other]
    assert report.served == [env.model_id]
    assert env.client.smembers(constants.PROD_MODELS_KEY) == {env.model_id.encode()}


def test_blob_names_outside_the_rule_are_ignored(env: SyncEnv) -> None:
    m = env.model_id
    env.upload("production.onnx", classifier())
    junk = classifier(WEIGHTS_V2)
    for name in (
        f"{m}/reproduction.onnx",
        f"{m}/sub/model_production.onnx",
        f"{m}//model_production.onnx",
        f"/{m}/model_production.onnx",
        f"{m}/model..production.onnx",
        f"{m}/model_production",
        f"{m}/model_production.onnx.bak",
        f"{m}x/model_production.onnx",
    ):
        env.upload_raw(name, junk)
    env.register("1.0.0")
    env.promote("1.0.0")

    report = env.sync()

    assert report.published == [m] and report.downloads == 1
    published = manifest.read_published(env.client, m)
    assert published is not None
    assert published[1] == {"onnx": classifier()}
    assert published[0].artifacts["onnx"].blob == f"{m}/production.onnx"
