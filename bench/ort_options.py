"""ONNX Runtime session options for one-row inference: p50/p99 of 1- and 100-row runs per
configuration, interleaved in rounds so that load from other processes hits all alike.

Run: `.venv/bin/python -m bench.ort_options` (needs the `train` extra for the tree model).
Last line: one JSON object, {model_xrows: {config: {p50_us, p99_us, cpu_us, ratio_p50}}}.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from tests.serving.onnx_models import linear_classifier

ROUNDS = 5
RUNS = 2000
N_FEATURES = 6
BATCHES = (1, 100)


def _options(
    intra: int,
    inter: int = 1,
    *,
    parallel: bool = False,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    spin: bool = True,
) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.graph_optimization_level = level
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


CONFIGS: dict[str, Callable[[], ort.SessionOptions]] = {
    "default": ort.SessionOptions,
    "intra1_seq_all": lambda: _options(1),
    "intra1_seq_all_nospin": lambda: _options(1, spin=False),
    "intra2_seq_all": lambda: _options(2),
    "intra2_seq_all_nospin": lambda: _options(2, spin=False),
    "intra1_parallel_inter2": lambda: _options(1, 2, parallel=True),
    "intra1_seq_basic": lambda: _options(1, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
    "intra1_seq_disabled": lambda: _options(1, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
}


def _models() -> dict[str, bytes]:
    models = {"linear": linear_classifier(N_FEATURES)}
    try:
        from skl2onnx import to_onnx
        from sklearn.ensemble import GradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return models
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
    for name, estimator in (
        ("sklearn_logistic", LogisticRegression()),
        ("sklearn_gbm100", GradientBoostingClassifier(n_estimators=100, max_depth=3)),
    ):
        estimator.fit(x, y)
        onx = to_onnx(estimator, x[:1], options={"zipmap": False})
        models[name] = onx.SerializeToString()
    return models


def _time(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> tuple[list[float], float]:
    """Wall time of each run (us), and the process's CPU time per run (us): spinning pool
    threads burn CPU that a busy server's request threads would need."""
    run = session.run
    samples = []
    cpu_start = time.process_time_ns()
    for _ in range(RUNS):
        start = time.perf_counter_ns()
        run(None, feed)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples, (time.process_time_ns() - cpu_start) / 1000 / RUNS


def main() -> None:
    """Measure every configuration on every model; print a table and the JSON line."""
    report: dict[str, dict[str, dict[str, float]]] = {}
    for (base_name, data), batch in itertools.product(_models().items(), BATCHES):
        row = np.random.default_rng(1).normal(size=(batch, N_FEATURES)).astype(np.float32)
        model_name = f"{base_name}_x{batch}"
        sessions = {
            name: ort.InferenceSession(data, make(), providers=["CPUExecutionProvider"])
            for name, make in CONFIGS.items()
        }
        feeds = {name: {s.get_inputs()[0].name: row} for name, s in sessions.items()}
        samples: dict[str, list[float]] = {name: [] for name in sessions}
        cpu: dict[str, list[float]] = {name: [] for name in sessions}
        for name, session in sessions.items():
            _time(session, feeds[name])  # warm-up
        for _ in range(ROUNDS):
            for name, session in sessions.items():
                wall, cpu_us = _time(session, feeds[name])
                samples[name] += wall
                cpu[name].append(cpu_us)
        figures = {
            name: {
                "p50_us": statistics.median(s),
                "p99_us": float(np.percentile(s, 99)),
                "cpu_us": statistics.median(cpu[name]),
            }
            for name, s in samples.items()
        }
        best = min(f["p50_us"] for f in figures.values())
        for name, f in figures.items():
            f["ratio_p50"] = f["p50_us"] / best
            print(
                f"{model_name:<18}{name:<26}p50 {f['p50_us']:7.1f} us  "
                f"p99 {f['p99_us']:7.1f} us  cpu {f['cpu_us']:7.1f} us  x{f['ratio_p50']:.2f}"
            )
        report[model_name] = figures
    print(json.dumps(report))


if __name__ == "__main__":
    main()
