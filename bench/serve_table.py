"""make bench-serve's table: its figures against the targets, for people."""

from __future__ import annotations

from typing import Any


def table(result: dict[str, Any]) -> str:
    """The figures against the targets, for people (p50 / p99 in one row)."""

    def pair(prefix: str) -> str:
        p50, p99 = result.get(f"{prefix}_p50_ms"), result.get(f"{prefix}_p99_ms")
        return "-" if p50 is None else f"{p50:.3f} / {p99:.3f}"

    r = result
    rows = [
        ("Predict 1 entity @500 rps, ghz: p50 / p99 (ms)", pair("predict"), "<= 1.5 / 4"),
        ("  errors, achieved rate, send late p99", "{} {:.0f}/s {:.2f} ms".format(
            r["predict_errors"], r["predict_achieved_rps"], r["predict_late_p99_ms"]), "0"),
        ("  floor at 50 rps beside it, ghz (ms)", pair("floor_under_load"), ""),
        ("  the same from Python threads (ms)", pair("predict_pyclient"), ""),
        ("  errors, achieved rate, send late p99", "{} {:.0f}/s {:.2f} ms".format(
            r["predict_pyclient_errors"], r["predict_pyclient_achieved_rps"],
            r["predict_pyclient_late_p99_ms"]), ""),
        ("  floor beside it, Python threads (ms)", pair("floor_under_load_pyclient"), ""),
        ("highest rate without errors, ghz (req/s)", r["max_rps_no_errors"], ">= 1000"),
        ("  the same from Python threads (req/s)", r["max_rps_no_errors_pyclient"], ""),
        ("highest rate with p99 <= 4 ms, ghz (req/s)", r["max_rps_p99_under_4ms"], ""),
        ("CPU/Predict @500: ghz / gRPC / Redis (ms)", "{:.3f} / {:.3f} / {:.3f}".format(
            r["cpu_ms_per_predict_client"], r["cpu_ms_per_predict_grpc"],
            r["cpu_ms_per_predict_redis"]), ""),
        ("  Python client / gRPC beside it (ms)", "{:.3f} / {:.3f}".format(
            r["cpu_ms_per_predict_pyclient"], r["cpu_ms_per_predict_grpc_pyclient"]), ""),
        ("server-side Predict over 1 / 2.5 ms (share)", "{:.3f} / {:.3f}".format(
            r["server_predict_over_1ms_share"], r["server_predict_over_2.5ms_share"]), ""),
        ("Predict 100 entities p50 / p99 (ms)", pair("predict_batch100"), "<= 5 (p50)"),
        ("  log off (ms)", pair("predict_batch100_unlogged"), ""),
        ("  floor in turn with it (ms)", pair("floor_beside_unlogged"), ""),
        ("Predict 1 entity one at a time (ms)", pair("predict_closed"), ""),
        ("ModelInfer 1 row (ms)", pair("infer"), ""),
        ("floor: health Check in turn (ms)", pair("floor"), ""),
        ("Predict, prediction log on (ms)", pair("predict_logged"), ""),
        ("Predict, prediction log off (ms)", pair("predict_unlogged"), ""),
        ("prediction log adds at p99 (ms)", r["predict_logging_added_p99_ms"], "<= 0.3"),
        ("  95% interval (ms)", str(r["predict_logging_added_p99_ci95_ms"]), ""),
        ("Predict, log on / off, 1 s blocks, p99 (ms)", "{:.3f} / {:.3f}".format(
            r["predict_logged_blocks_p99_ms"], r["predict_unlogged_blocks_p99_ms"]), ""),
        ("  adds at p50 / p99 (ms)", "{:.3f} / {:.3f}".format(
            r["predict_logging_added_blocks_p50_ms"],
            r["predict_logging_added_blocks_p99_ms"]), ""),
        ("prediction log: delivered / dropped / in DuckDB", "{} / {} / {}".format(
            r["prediction_log_delivered"], r["prediction_log_dropped"],
            r["prediction_log_rows"]), ""),
    ]  # fmt: skip
    lines = [f"{'MEASURE':<48}{'VALUE':>22}  TARGET"]
    for name, value, target in rows:
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{name:<48}{shown:>22}  {target}")
    return "\n".join(lines)
