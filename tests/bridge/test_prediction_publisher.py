"""The prediction log's publisher thread, one step at a time (no services: the broker's
address answers nothing, so produced records wait in the producer's queue)."""

from __future__ import annotations

from pathlib import Path

import orjson

from bridge.prediction_publisher import KafkaPredictionLog
from tests.conftest import make_settings
from tests.serving.test_prediction_log import result


def test_a_call_of_many_entities_is_encoded_a_few_records_per_step(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, kafka_bootstrap="localhost:1")
    sink = KafkaPredictionLog(settings, records_per_step=16, yield_s=0)
    try:
        sink.log_predict("r1", result(entities=40))
        sink.log_predict("r2", result(entities=1))

        steps = [sink.step(idle_wait_s=0) for _ in range(3)]

        assert steps == [16, 16, 9]  # the GIL is given back between steps
        assert len(sink.producer) == 41
        assert sink.step(idle_wait_s=0) == 0 and not sink._pending
    finally:
        sink.producer.purge()


def test_a_step_takes_calls_until_it_has_its_records(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, kafka_bootstrap="localhost:1")
    sink = KafkaPredictionLog(settings, calls_per_step=10, records_per_step=4, yield_s=0)
    try:
        for i in range(12):
            sink.log_predict(f"r{i}", result(entities=1))
        sink.log_predict("r12", result(entities=3))

        steps = [sink.step(idle_wait_s=0) for _ in range(5)]

        # 1-entity calls four a step (one sleep per step, not per call), then the 3-entity one
        assert steps == [4, 4, 4, 3, 0]
        assert len(sink.buffer) == 0 and len(sink.producer) == 15
    finally:
        sink.producer.purge()


def test_records_keep_their_order_and_content_across_steps(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, kafka_bootstrap="localhost:1")
    sent: list[bytes] = []
    sink = KafkaPredictionLog(settings, records_per_step=3, yield_s=0)

    class Recorder:
        def produce(self, _topic: str, message: bytes, **_: object) -> None:
            sent.append(message)

        def poll(self, _timeout: float) -> int:
            return 0

    real = sink.producer
    sink.producer = Recorder()  # type: ignore[assignment]
    try:
        sink.log_predict("r1", result(entities=7))
        while sink.step(idle_wait_s=0):
            pass
    finally:
        real.purge()
    assert [orjson.loads(m)["entity_id"] for m in sent] == [f"e{i}" for i in range(7)]
