"""Open Inference Protocol tensors: output encodings of every dtype a model may return."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from featurestore.errors import LimitError, ValidationError
from grpc_server import tensors
from grpc_server.generated import grpc_predict_v2_pb2 as oip


def encoded(array: np.ndarray, raw: bool) -> oip.ModelInferResponse:
    response = oip.ModelInferResponse()
    tensors.encode_outputs(response, {"out": array}, ["out"], raw)
    return response


@pytest.mark.parametrize(
    ("array", "datatype", "field"),
    [
        (np.array([True, False]), "BOOL", "bool_contents"),
        (np.array([-3, 4], dtype=np.int8), "INT8", "int_contents"),
        (np.array([-3, 4], dtype=np.int32), "INT32", "int_contents"),
        (np.array([-3, 2**40], dtype=np.int64), "INT64", "int64_contents"),
        (np.array([3, 4], dtype=np.uint16), "UINT16", "uint_contents"),
        (np.array([3, 2**63], dtype=np.uint64), "UINT64", "uint64_contents"),
        (np.array([0.25, -1.5], dtype=np.float32), "FP32", "fp32_contents"),
        (np.array([0.1, -1e300], dtype=np.float64), "FP64", "fp64_contents"),
    ],
)
def test_typed_and_raw_outputs_keep_values(array: np.ndarray, datatype: str, field: str) -> None:
    typed = encoded(array.reshape(1, 2), raw=False)
    [tensor] = typed.outputs
    assert (tensor.datatype, list(tensor.shape)) == (datatype, [1, 2])
    assert [f.name for f, _ in tensor.contents.ListFields()] == [field]
    assert list(getattr(tensor.contents, field)) == array.tolist()
    raw = encoded(array.reshape(1, 2), raw=True)
    assert not raw.outputs[0].contents.ListFields()
    dtype = array.dtype.newbyteorder("<")
    assert np.frombuffer(raw.raw_output_contents[0], dtype=dtype).tolist() == array.tolist()


def test_float16_goes_as_fp32() -> None:
    [tensor] = encoded(np.array([0.5, 2.0], dtype=np.float16), raw=False).outputs
    assert (tensor.datatype, list(tensor.contents.fp32_contents)) == ("FP32", [0.5, 2.0])


def test_string_labels_go_as_bytes() -> None:
    labels = np.array(["good", "bad"])
    [tensor] = encoded(labels, raw=False).outputs
    assert (tensor.datatype, list(tensor.contents.bytes_contents)) == ("BYTES", [b"good", b"bad"])
    raw = encoded(labels.astype(object), raw=True).raw_output_contents[0]
    assert raw == struct.pack("<I", 4) + b"good" + struct.pack("<I", 3) + b"bad"


def test_requested_outputs_in_order_without_repeats() -> None:
    assert tensors.select_outputs(["b", "a", "b"], ["a", "b"]) == ["b", "a"]
    assert tensors.select_outputs([], ["a", "b"]) == ["a", "b"]
    with pytest.raises(ValidationError, match="unknown output 'c'; this model's outputs are a, b"):
        tensors.select_outputs(["c"], ["a", "b"])


def test_rows_over_the_limit_are_a_limit_error() -> None:
    request = oip.ModelInferRequest()
    tensor = request.inputs.add(name="input", datatype="FP64", shape=[3, 2])
    tensor.contents.fp64_contents.extend([1.0] * 6)
    assert tensors.decode_rows(request, 2, 3).shape == (3, 2)
    with pytest.raises(LimitError, match="3 rows; at most 2"):
        tensors.decode_rows(request, 2, 2)
