"""Predict hammered from threads while the sync swaps versions: every answer is exactly its
reported version (model and scaler of that version) run in-process on the same features."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from featurestore.constants import online_feature_key
from featurestore.serving.predict import PredictionResult, Predictor
from featurestore.serving.runtime import ModelCache
from tests.helpers import wait_until
from tests.serving import onnx_models
from tests.serving.sync_env import FEATURES, WEIGHTS_V1, WEIGHTS_V2, SyncEnv, env

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture

# Odd versions: weights 1 with scaler 1; even ones: weights 2 with scaler 2. A torn read (the
# model of one version beside the scaler of another) matches neither.
SCALERS = {1: ([0.3, 40.0, 0.0], [0.2, 12.0, 1.0]), 2: ([0.5, 30.0, 0.5], [0.1, 8.0, 2.0])}
WEIGHTS = {1: WEIGHTS_V1, 2: WEIGHTS_V2}
ENTITIES = [f"swap_{i}" for i in range(12)]


def _kind(version: str) -> int:
    return 1 if int(version.split(".")[0]) % 2 else 2


def _publish(env: SyncEnv, number: int) -> None:
    kind = 1 if number % 2 else 2
    mean, scale = SCALERS[kind]
    env.upload("model_production.onnx", onnx_models.linear_classifier(3, WEIGHTS[kind], 0.1))
    env.upload("scaler_production.json", onnx_models.scaler_json(mean, scale))
    version = f"{number}.0.0"
    env.register(version, "model")
    env.register(version, "scaler")
    env.promote(version)
    assert env.sync().published == [env.model_id]


def _check(result: PredictionResult) -> None:
    kind = _kind(result.version)
    mean, scale = SCALERS[kind]
    rows = np.array([[f.value for f in p.features] for p in result.predictions])
    expected = onnx_models.expected_classifier(
        rows, WEIGHTS[kind], 0.1, types=[t for _, t in FEATURES], mean=mean, scale=scale
    )
    got = np.array([p.outputs["probabilities"] for p in result.predictions], dtype=np.float64)
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-5, atol=1e-6)
    labels = [p.outputs["label"] for p in result.predictions]
    assert labels == [[float(x)] for x in expected["label"]]


def test_predict_during_version_swaps_answers_with_one_whole_version(env: SyncEnv) -> None:
    rng = np.random.default_rng(7)
    for entity in ENTITIES:
        values = [rng.uniform(0, 1), rng.integers(18, 80), rng.integers(0, 2)]
        for (name, _), value in zip(FEATURES, values, strict=True):
            env.client.hset(online_feature_key(entity), name, f"1700000000000000:{value}")
    _publish(env, 1)
    cache = ModelCache(env.client, allow_pickle=False)
    cache.refresh()
    predictor = Predictor(env.client, cache, None, max_entities=100, fallback_timeout_s=1.0)
    stop = threading.Event()
    refresher = threading.Thread(target=cache.run, args=(stop, 0.005), daemon=True)
    refresher.start()
    results: list[list[PredictionResult]] = [[] for _ in range(3)]
    errors: list[BaseException] = []

    def hammer(index: int) -> None:
        step = 0
        try:
            while not stop.is_set():
                batch = [ENTITIES[(step + k) % len(ENTITIES)] for k in range(1 + step % 4)]
                results[index].append(predictor.predict(env.model_id, batch))
                step += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        for number in range(2, 6):
            _publish(env, number)
            version = f"{number}.0.0"

            def answered_by(version: str = version) -> bool:
                return any(r and r[-1].version == version for r in results)

            assert wait_until(answered_by, timeout=30), f"no answer from {version}"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        refresher.join(timeout=30)

    assert not errors, errors
    answered = [r for per_thread in results for r in per_thread]
    assert {r.version for r in answered} == {f"{n}.0.0" for n in range(1, 6)}
    for per_thread in results:
        # A thread never goes back to an older version once it has seen a newer one.
        numbers = [int(r.version.split(".")[0]) for r in per_thread]
        assert numbers == sorted(numbers)
    for result in answered:
        assert result.model_id == env.model_id
        _check(result)
