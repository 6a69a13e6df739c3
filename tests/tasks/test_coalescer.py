"""How read_many outcomes become results or errors (no services)."""

from __future__ import annotations

import pytest

from featurestore.errors import QueryError, ReadOnlyError
from tasks.client.coalescer import outcome_to_result


def test_bytes_are_the_result() -> None:
    assert outcome_to_result(b"arrow") == b"arrow"


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (("ReadOnlyError", "the read path runs SELECT only, got DELETE"), ReadOnlyError),
        (("QueryError", "Catalog Error: no table"), QueryError),
        (("SomethingNew", "unexpected"), QueryError),
    ],
)
def test_errors_keep_their_type_and_message(outcome: tuple[str, str], error: type) -> None:
    with pytest.raises(error, match=outcome[1]):
        outcome_to_result(list(outcome))
