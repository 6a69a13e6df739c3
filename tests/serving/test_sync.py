"""Model sync against real Azurite, Redis and a DuckDB registry: publish, skip unchanged
blobs, new versions, demotion, every refusal (the served version stays), Azure down."""

from __future__ import annotations

import logging
import pickle
import socket
from collections.abc import Callable

import pytest
from azure.storage.blob import BlobServiceClient
from prometheus_client import REGISTRY

from featurestore import constants
from featurestore.errors import ArtifactError, ServiceError
from featurestore.serving import artifacts, manifest
from featurestore.serving.runtime import load_model
from tasks.model_sync_tasks import ModelSyncTask
from tasks.model_sync_tasks import sync_models as sync_task
from tasks.model_sync_worker import SyncResources
from tests.serving.sync_env import WEIGHTS_V2, SyncEnv, classifier, env, scaler

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture


def metric(name: str, **labels: str) -> float:
    """A sample of this process's metrics (0 when never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_first_sync_publishes_a_validated_version_atomically(env: SyncEnv) -> None:
    onnx_etag = env.upload("model_production.onnx", classifier())
    scaler_etag = env.upload("scaler_production.json", scaler())
    env.register("1.0.0", "model")
    env.register("1.0.0", "scaler")
    assert env.sync().published == []  # staging is not served
    env.promote("1.0.0")

    report = env.sync()

    m = env.model_id
    assert (report.published, report.served, report.failed) == ([m], [m], {})
    assert report.downloads == 2
    assert report.bytes_downloaded == len(classifier()) + len(scaler())
    assert env.client.sismember(constants.PROD_MODELS_KEY, m)
    published = manifest.read_published(env.client, m)
    assert published is not None
    served, data = published
    assert data == {"onnx": classifier(), "json": scaler()}
    assert served.version == "1.0.0"
    assert [f.name for f in served.expected_features] == [
        "debt_to_income_ratio",
        "age_years",
        "has_default",
    ]
    assert {ext: (a.artifact_type, a.etag, a.bytes) for ext, a in served.artifacts.items()} == {
        "onnx": ("model", onnx_etag, len(classifier())),
        "json": ("scaler", scaler_etag, len(scaler())),
    }
    assert served.artifacts["onnx"].blob == f"{m}/model_production.onnx"
    status = manifest.read_status(env.client, m)
    assert status is not None and status.last_success_at is not None
    assert status.last_error_reason is None
    assert load_model(served, data, allow_pickle=False).version == "1.0.0"
    assert metric("fstore_model_served_version", model=m, version="1.0.0") == 1
    assert metric("fstore_model_sync_last_success_timestamp_seconds", model=m) > 0
    assert metric("fstore_model_sync_bytes_total", model=m) == report.bytes_downloaded


def test_unchanged_blobs_are_not_downloaded_again(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    before = manifest.read_manifest(env.client, m)
    downloads = metric("fstore_model_sync_downloads_total", model=m)
    skipped = metric("fstore_model_sync_downloads_skipped_total", model=m)

    for _ in range(2):
        report = env.sync()
        assert (report.unchanged, report.served, report.published) == ([m], [m], [])
        assert (report.downloads, report.downloads_skipped, report.bytes_downloaded) == (0, 2, 0)

    assert manifest.read_manifest(env.client, m) == before  # not even republished
    assert metric("fstore_model_sync_downloads_total", model=m) == downloads
    assert metric("fstore_model_sync_downloads_skipped_total", model=m) == skipped + 4


def test_new_version_is_published_and_unchanged_scaler_reused(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    etag = env.upload("model_production.onnx", classifier(WEIGHTS_V2))
    env.register("2.0.0", "model")
    env.register("2.0.0", "scaler")
    env.promote("2.0.0")

    report = env.sync()

    assert report.published == [m]
    assert (report.downloads, report.downloads_skipped) == (1, 1)  # the scaler kept its ETag
    published = manifest.read_published(env.client, m)
    assert published is not None
    assert published[0].version == "2.0.0"
    assert published[0].artifacts["onnx"].etag == etag
    assert published[1] == {"onnx": classifier(WEIGHTS_V2), "json": scaler()}
    assert metric("fstore_model_served_version", model=m, version="2.0.0") == 1
    assert (
        REGISTRY.get_sample_value("fstore_model_served_version", {"model": m, "version": "1.0.0"})
        is None
    )


def test_same_version_with_a_replaced_blob_is_republished(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    before = manifest.read_manifest(env.client, m)
    assert before is not None
    etag = env.upload("model_production.onnx", classifier(WEIGHTS_V2))

    report = env.sync()

    assert report.published == [m]
    after = manifest.read_manifest(env.client, m)
    assert after is not None and after.version == "1.0.0"
    assert after.artifacts["onnx"].etag == etag != before.artifacts["onnx"].etag
    assert after.fingerprint != before.fingerprint
    assert env.client.get(constants.model_artifact_key(m, "onnx")) == classifier(WEIGHTS_V2)


def test_demotion_removes_the_model(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    env.archive("1.0.0")

    report = env.sync()

    assert (report.removed, report.served) == ([m], [])
    assert not env.client.sismember(constants.PROD_MODELS_KEY, m)
    assert manifest.read_manifest(env.client, m) is None
    assert list(env.client.scan_iter(match=f"model:{m}:*")) == []
    assert manifest.read_status(env.client, m) is None


def _missing_scaler(env: SyncEnv) -> None:
    env.delete("scaler_production.json")


def _corrupt_onnx(env: SyncEnv) -> None:
    env.upload("model_production.onnx", b"this is not an ONNX graph")


def _wrong_input_width(env: SyncEnv) -> None:
    env.upload("model_production.onnx", classifier([0.1, 0.2, 0.3, 0.4], width=4))


def _scaler_of_wrong_width(env: SyncEnv) -> None:
    env.upload("scaler_production.json", scaler(width=2))


def _pickle(env: SyncEnv) -> None:
    env.delete("model_production.onnx")
    env.upload("model_production.pkl", pickle.dumps({"never": "unpickled"}))


def _two_onnx(env: SyncEnv) -> None:
    env.upload("other-production.onnx", classifier(WEIGHTS_V2))


FAILURES: dict[str, tuple[str, Callable[[SyncEnv], None]]] = {
    "missing artifact": ("missing_artifact", _missing_scaler),
    "corrupt onnx": ("onnx_invalid", _corrupt_onnx),
    "wrong input width": ("input_width", _wrong_input_width),
    "scaler of the wrong width": ("scaler_width", _scaler_of_wrong_width),
    "pickle refused": ("pickle_refused", _pickle),
    "ambiguous": ("ambiguous", _two_onnx),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_refused_version_keeps_the_served_one_and_is_reported(
    env: SyncEnv, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    env.serve_v1()
    m = env.model_id
    served_before = manifest.read_published(env.client, m)
    reason, break_it = FAILURES[case]
    break_it(env)
    env.register("2.0.0", "model")
    env.register("2.0.0", "scaler")
    env.promote("2.0.0")
    failures = metric("fstore_model_sync_failures_total", model=m, reason=reason)

    with caplog.at_level(logging.ERROR, logger="featurestore.serving.sync"):
        report = env.sync()

    assert report.failed == {m: reason}
    assert report.served == [m] and report.published == []
    assert manifest.read_published(env.client, m) == served_before
    assert env.client.sismember(constants.PROD_MODELS_KEY, m)
    status = manifest.read_status(env.client, m)
    assert status is not None
    assert (status.last_error_reason, status.rejected_version) == (reason, "2.0.0")
    assert status.last_error
    assert metric("fstore_model_sync_failures_total", model=m, reason=reason) == failures + 1
    assert any(
        f"model_sync_failed model_id={m} version=2.0.0 reason={reason} served_version=1.0.0"
        in r.getMessage()
        for r in caplog.records
    )


def test_a_new_model_that_fails_stays_unserved(env: SyncEnv) -> None:
    _corrupt_onnx(env)
    env.register("1.0.0", "model")
    env.promote("1.0.0")

    report = env.sync()

    assert report.failed == {env.model_id: "onnx_invalid"}
    assert report.served == []
    assert not env.client.sismember(constants.PROD_MODELS_KEY, env.model_id)
    assert manifest.read_manifest(env.client, env.model_id) is None
    status = manifest.read_status(env.client, env.model_id)
    assert status is not None and status.rejected_version == "1.0.0"


def test_too_large_is_refused_from_the_listing(
    env: SyncEnv, caplog: pytest.LogCaptureFixture
) -> None:
    env.serve_v1()
    m = env.model_id
    env.upload("model_production.onnx", classifier(WEIGHTS_V2))
    limit = len(classifier(WEIGHTS_V2)) - 1

    with caplog.at_level(logging.ERROR, logger="featurestore.serving.sync"):
        report = env.sync(max_artifact_bytes=limit)

    assert report.failed == {m: "too_large"}
    assert report.downloads == 0
    published = manifest.read_published(env.client, m)
    assert published is not None and published[1]["onnx"] == classifier()
    [line] = [r.getMessage() for r in caplog.records if "model_sync_failed" in r.getMessage()]
    assert "reason=too_large" in line and f"over max_artifact_bytes={limit}" in line


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
