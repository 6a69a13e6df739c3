"""Model sync against real Azurite, Redis and a DuckDB registry: publish, skip unchanged
blobs, new versions, demotion, stale keys, every refusal (the served version stays)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from featurestore import constants
from featurestore.serving import manifest
from featurestore.serving.runtime import load_model
from tests.serving.sync_env import WEIGHTS_V2, SyncEnv, classifier, env, metric, scaler

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture


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


def test_an_extension_the_new_version_lacks_is_deleted_with_the_publish(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    env.delete("scaler_production.json")
    env.upload("model_production.onnx", classifier(WEIGHTS_V2))
    env.register("2.0.0", "model")  # no scaler in this version
    env.promote("2.0.0")

    assert env.sync().published == [m]

    assert env.client.get(constants.model_artifact_key(m, "json")) is None
    published = manifest.read_published(env.client, m)
    assert published is not None and set(published[1]) == {"onnx"}


def test_a_model_served_by_the_first_sync_without_a_manifest_is_taken_over(
    env: SyncEnv,
) -> None:
    m = env.model_id
    legacy = {constants.model_artifact_key(m, ext): b"old" for ext in ("onnx", "json", "txt")}
    env.client.mset(legacy)
    env.client.sadd(constants.PROD_MODELS_KEY, m)
    env.upload("model_production.onnx", classifier())
    env.register("1.0.0")
    env.promote("1.0.0")

    assert env.sync().published == [m]

    published = manifest.read_published(env.client, m)
    assert published is not None and published[1] == {"onnx": classifier()}
    assert env.client.exists(*legacy) == 1  # only model:<id>:onnx, now the new bytes
    other = f"{m}_old"
    env.client.set(constants.model_artifact_key(other, "onnx"), b"old")
    env.client.sadd(constants.PROD_MODELS_KEY, other)
    assert env.sync().removed == [other]
    assert env.client.get(constants.model_artifact_key(other, "onnx")) is None


def test_a_refused_version_is_not_downloaded_again_until_its_blobs_change(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    _corrupt_onnx(env)
    env.register("2.0.0", "model")
    env.register("2.0.0", "scaler")
    env.promote("2.0.0")
    first = env.sync()
    assert first.failed == {m: "onnx_invalid"} and first.downloads >= 1

    again = env.sync()

    assert again.failed == {m: "onnx_invalid"}
    assert (again.downloads, again.downloads_skipped) == (0, 2)
    status = manifest.read_status(env.client, m)
    assert status is not None and status.rejected_version == "2.0.0"
    assert status.last_error is not None
    assert status.last_error.count("unchanged since refused") == 1
    assert env.sync().failed == {m: "onnx_invalid"}  # the message does not grow
    status = manifest.read_status(env.client, m)
    assert status is not None and status.last_error is not None
    assert status.last_error.count("unchanged since refused") == 1

    env.upload("model_production.onnx", classifier(WEIGHTS_V2))  # a fixed blob: a new ETag
    fixed = env.sync()

    assert fixed.failed == {} and fixed.published == [m] and fixed.downloads == 1
    published = manifest.read_published(env.client, m)
    assert published is not None and published[0].version == "2.0.0"


def test_a_refusal_is_judged_again_when_the_judging_settings_change(env: SyncEnv) -> None:
    env.serve_v1()
    m = env.model_id
    _pickle(env)
    env.register("2.0.0", "model")
    env.register("2.0.0", "scaler")
    env.promote("2.0.0")
    assert env.sync().failed == {m: "pickle_refused"}
    assert env.sync().downloads == 0

    report = env.sync(allow_pickle=True)

    assert report.downloads >= 1  # judged again: the refusal was for the other setting
