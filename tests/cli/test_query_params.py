"""fstore query's --param: typed values, and integers that cannot travel refused clearly."""

from __future__ import annotations

import pytest

from featurestore.cli import build_parser


def _params(*values: str) -> list[object]:
    argv = ["query", "SELECT 1"]
    for value in values:
        argv += ["--param", value]
    params: list[object] = build_parser().parse_args(argv).params
    return params


def test_params_are_integers_else_floats_else_text() -> None:
    got = _params("7", "007", "-3", "2.5", "1e400", "nan", "abc", "", str(2**64 - 1), str(-(2**63)))
    assert got[:3] == [7, 7, -3] and all(type(v) is int for v in got[:3])
    assert got[3] == 2.5 and got[4] == float("inf") and got[5] != got[5]
    assert got[6:8] == ["abc", ""]
    assert got[8:] == [2**64 - 1, -(2**63)]


@pytest.mark.parametrize("value", [str(2**64), "99999999999999999999999", str(-(2**63) - 1)])
def test_integers_past_64_bits_are_refused_naming_the_value(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # They reached the read path's serializer and ended in a msgpack traceback.
    with pytest.raises(SystemExit) as exited:
        _params(value)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --param: '{value}' is an integer outside" in err
    assert "--param-json" in err and "Traceback" not in err
