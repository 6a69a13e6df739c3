"""make bench-serve's reading of ghz (bench.ghz), without services: its JSON report, the
protoset and the credentials it is given."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from pydantic import SecretStr

from bench import ghz
from bench.load import ramp
from featurestore.settings import Settings
from grpc_server.generated import featurestore_pb2

# The shape of ghz v0.120.0's `-O json` report (captured, details trimmed and their times
# set by hand). One call a 10 ms slot from 16.000 s: the first two within the warm-up, the
# third sent 230 ms late, the fourth past its deadline; details come in order of their end,
# one of them written with a zone offset, as Go writes a time.Time; 6 calls were planned.
REPORT = {
    "date": "2026-11-29T18:36:21Z",
    "endReason": "normal",
    "count": 5,
    "total": 2300000000,
    "rps": 97.5,
    "errorDistribution": {"rpc error: code = DeadlineExceeded desc = context deadline": 1},
    "statusCodeDistribution": {"OK": 4, "DeadlineExceeded": 1},
    "latencyDistribution": [{"percentage": 50, "latency": 2000000}],
    "details": [
        {"timestamp": "2026-11-29T18:36:16.011Z", "latency": 1000000, "error": "", "status": "OK"},
        {"timestamp": "2026-11-29T18:36:16.05Z", "latency": 50000000, "error": "", "status": "OK"},
        {"timestamp": "2026-11-29T18:36:16.252Z", "latency": 2000000, "error": "", "status": "OK"},
        {
            "timestamp": "2026-11-29T19:36:16.403+01:00",
            "latency": 3000000,
            "error": "",
            "status": "OK",
        },
        {
            "timestamp": "2026-11-29T18:36:18.3Z",
            "latency": 2000000000,
            "error": "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
            "status": "DeadlineExceeded",
        },
    ],
}


def test_report_latencies_skip_the_warm_up_and_the_failed_calls() -> None:
    run = ghz.parse_report(REPORT, rate=100, planned=6)
    assert run.latencies_ms == [2.0, 3.0]
    assert run.achieved_rps == 97.5


def test_report_errors_by_status_count_calls_never_reported() -> None:
    run = ghz.parse_report(REPORT, rate=100, planned=6)
    assert run.errors == {"DEADLINE_EXCEEDED": 1, "NOT_SENT": 1}
    assert run.error_count == 2
    assert not run.kept_up()
    assert run.summary("predict")["predict_errors"] == 2


def test_report_lateness_is_each_send_against_its_slot() -> None:
    run = ghz.parse_report(REPORT, rate=100, planned=6)
    assert run.late_ms == pytest.approx([0.0, 0.0, 230.0, 270.0, 360.0])


def test_a_clean_run_at_its_rate_kept_up_and_a_slow_one_did_not() -> None:
    clean = {**REPORT, "details": REPORT["details"][:4], "rps": 98.0}  # type: ignore[index]
    assert ghz.parse_report(clean, rate=100, planned=4).kept_up()
    assert not ghz.parse_report({**clean, "rps": 90.0}, rate=100, planned=4).kept_up()


def test_an_error_without_status_is_unknown() -> None:
    detail = {"timestamp": "2026-11-29T18:36:16Z", "latency": 0, "error": "dial", "status": ""}
    run = ghz.parse_report({"rps": 1.0, "details": [detail]}, rate=1, planned=1)
    assert run.errors == {"UNKNOWN": 1}


@pytest.mark.parametrize(
    ("go_name", "name"),
    [("OK", "OK"), ("DeadlineExceeded", "DEADLINE_EXCEEDED"), ("Canceled", "CANCELLED")],
)
def test_status_names_are_grpc_python_names(go_name: str, name: str) -> None:
    assert ghz.status_name(go_name) == name


def test_times_keep_nanoseconds_and_zones() -> None:
    whole = int(dt.datetime(2026, 11, 29, 18, 36, 16, tzinfo=dt.UTC).timestamp()) * 10**9
    assert ghz.epoch_ns("2026-11-29T18:36:16.26104741Z") == whole + 261047410
    assert ghz.epoch_ns("2026-11-29T18:36:16.123456789Z") == whole + 123456789
    assert ghz.epoch_ns("2026-11-29T20:36:16+02:00") == whole
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        ghz.epoch_ns("yesterday")


def test_protoset_holds_the_services_after_their_imports(tmp_path: Path) -> None:
    path = ghz.write_protoset(tmp_path / "set", featurestore_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR)
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    names = [f.name for f in files]
    assert names.index("google/protobuf/timestamp.proto") < names.index(
        featurestore_pb2.DESCRIPTOR.name
    )
    services = {f"{f.package}.{s.name}" for f in files for s in f.service}
    assert {"featurestore.v1.FeatureStore", "grpc.health.v1.Health"} <= services


def test_target_plaintext_without_token(tmp_path: Path) -> None:
    plain = Settings(grpc_tls_cert=None, grpc_tls_key=None, grpc_auth_token=None)
    to = ghz.target(plain, "localhost:1", tmp_path)
    assert "--insecure" in to.args()
    assert "--metadata-file" not in to.args()


def test_target_passes_tls_root_and_token_in_a_private_file(tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    settings = Settings(grpc_tls_root_cert=root, grpc_auth_token=SecretStr("s3cret-token-4242"))
    to = ghz.target(settings, "localhost:1", tmp_path)
    args = to.args()
    assert args[args.index("--cacert") + 1] == str(root)
    assert "--insecure" not in args
    assert all("s3cret" not in arg for arg in args)
    assert to.metadata_file is not None
    assert to.metadata_file.stat().st_mode & 0o077 == 0
    assert '"Bearer s3cret-token-4242"' in to.metadata_file.read_text()


def test_ramp_stops_at_the_first_step_that_errs_and_keeps_the_last_clean_rate() -> None:
    def step(rate: int) -> ghz.GhzRun:
        errors = Counter({"DEADLINE_EXCEEDED": 3}) if rate >= 1000 else Counter[str]()
        return ghz.GhzRun(rate, rate, [1.0, 2.0], errors=errors, achieved_rps=rate)

    best, steps = ramp(step, 500, 250, "test")
    assert best == 750
    assert [s["rate"] for s in steps] == [500, 750, 1000]
    assert steps[-1]["errors"] == 3


def test_ramp_stops_when_a_step_misses_its_rate() -> None:
    def step(rate: int) -> ghz.GhzRun:
        return ghz.GhzRun(rate, rate, [1.0], achieved_rps=min(rate, 800))

    best, steps = ramp(step, 500, 250, "test")
    assert best == 750
    assert steps[-1]["achieved_rps"] == 800
