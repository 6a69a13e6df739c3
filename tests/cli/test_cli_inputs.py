"""Odd inputs to the serving commands: timeouts that are no time, and an entity with nothing
online in JSON (against a gRPC server in this process on the real Redis)."""

from __future__ import annotations

import uuid

import pytest

from featurestore.cli import build_parser
from featurestore.cli.serving import cmd_features
from featurestore.services import ManagedService
from featurestore.settings import Settings
from tests.grpc_server.inprocess import running_server


@pytest.mark.parametrize(
    "command", [["query", "SELECT 1"], ["features", "a"], ["predict", "m", "a"]]
)
@pytest.mark.parametrize("timeout", ["-5", "0", "nan", "inf", "soon"])
def test_timeouts_that_are_no_time_are_refused(
    command: list[str], timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # -5 reached the read path and ended in a traceback; nan was taken as no limit.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--timeout", timeout])
    assert exited.value.code == 2
    assert f"argument --timeout: '{timeout}'" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("form", ["table", "json"])
def test_an_entity_with_nothing_online_exits_1_in_either_form(
    settings: Settings,
    redis_service: ManagedService,
    form: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nobody = f"nobody_{uuid.uuid4().hex}"
    with running_server(settings) as server:
        local = settings.model_copy(update={"grpc_port": server.port})
        args = build_parser().parse_args(["features", nobody, "--format", form])
        # JSON said {"features": {}} and exited 0 where the table exits 1.
        assert cmd_features(local, args) == 1
    assert nobody in capsys.readouterr().out
