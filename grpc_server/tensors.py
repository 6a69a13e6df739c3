"""Open Inference Protocol tensors <-> numpy: a ModelInfer's input rows in, outputs out."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from featurestore.errors import LimitError, ValidationError
from grpc_server.generated import grpc_predict_v2_pb2 as oip

INPUT_NAME = "input"

# The input datatypes ModelInfer takes (little-endian, as the protocol's raw form is).
INPUT_DTYPES: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_TYPED_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents"}

# numpy kind+size -> (protocol datatype, InferTensorContents field). FP16 has no typed
# field in the protocol, so float16 outputs are sent as FP32.
_OUTPUTS: dict[str, tuple[str, str]] = {
    "b1": ("BOOL", "bool_contents"),
    "i1": ("INT8", "int_contents"),
    "i2": ("INT16", "int_contents"),
    "i4": ("INT32", "int_contents"),
    "i8": ("INT64", "int64_contents"),
    "u1": ("UINT8", "uint_contents"),
    "u2": ("UINT16", "uint_contents"),
    "u4": ("UINT32", "uint_contents"),
    "u8": ("UINT64", "uint64_contents"),
    "f4": ("FP32", "fp32_contents"),
    "f8": ("FP64", "fp64_contents"),
}
_LENGTH = struct.Struct("<I")


def datatype_of(dtype: np.dtype) -> str:
    """The protocol datatype a numpy array of this dtype is sent as."""
    if dtype.kind in "OUS":
        return "BYTES"
    if dtype == np.float16:
        return "FP32"
    found = _OUTPUTS.get(f"{dtype.kind}{dtype.itemsize}")
    if found is None:
        raise ValueError(f"no Open Inference Protocol datatype for {dtype}")
    return found[0]


def decode_rows(request: oip.ModelInferRequest, n_features: int, max_rows: int) -> np.ndarray:
    """The request's one input as float64 rows (n, n_features); ValidationError naming what
    is wrong with the tensor otherwise."""
    if len(request.inputs) != 1:
        raise ValidationError(
            f"expected one input tensor named '{INPUT_NAME}', got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise ValidationError(
            f"unknown input tensor {tensor.name!r}; this model takes one named '{INPUT_NAME}'"
        )
    dtype = INPUT_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise ValidationError(
            f"input '{INPUT_NAME}' has datatype {tensor.datatype!r}; expected FP32 or FP64"
        )
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[0] < 1 or shape[1] != n_features:
        raise ValidationError(
            f"input '{INPUT_NAME}' has shape {shape}; expected [n, {n_features}] with n >= 1"
        )
    rows = shape[0]
    if rows > max_rows:
        raise LimitError(f"input '{INPUT_NAME}' has {rows} rows; at most {max_rows} per call")
    count = rows * n_features
    if request.raw_input_contents:
        values = _raw_values(request, tensor, dtype, shape, count)
    else:
        values = _typed_values(tensor, shape, count)
    if not np.isfinite(values).all():
        raise ValidationError(f"input '{INPUT_NAME}' has values that are NaN or infinite")
    return values.reshape(rows, n_features).astype(np.float64, copy=False)


def _raw_values(
    request: oip.ModelInferRequest,
    tensor: oip.ModelInferRequest.InferInputTensor,
    dtype: np.dtype,
    shape: list[int],
    count: int,
) -> np.ndarray:
    if len(request.raw_input_contents) != 1:
        raise ValidationError(
            f"raw_input_contents has {len(request.raw_input_contents)} entries; "
            "expected one, for the one input"
        )
    if tensor.contents.ListFields():
        raise ValidationError(
            f"input '{INPUT_NAME}' has both contents and raw_input_contents; give one of them"
        )
    raw = request.raw_input_contents[0]
    needed = count * dtype.itemsize
    if len(raw) != needed:
        raise ValidationError(
            f"raw_input_contents[0] has {len(raw)} bytes; shape {shape} of "
            f"{tensor.datatype} needs {needed}"
        )
    return np.frombuffer(raw, dtype=dtype)


def _typed_values(
    tensor: oip.ModelInferRequest.InferInputTensor, shape: list[int], count: int
) -> np.ndarray:
    field = _TYPED_FIELD[tensor.datatype]
    others = sorted(f.name for f, _ in tensor.contents.ListFields() if f.name != field)
    if others:
        raise ValidationError(
            f"input '{INPUT_NAME}' is {tensor.datatype} but has {', '.join(others)}; "
            f"send its values in {field}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise ValidationError(
            f"input '{INPUT_NAME}' has {len(values)} values in {field}; shape {shape} needs {count}"
        )
    # np.asarray stays cheap from one row to thousands of values; np.fromiter is a little
    # faster for one row but far slower for thousands (README, Benchmarks).
    return np.asarray(values, dtype=INPUT_DTYPES[tensor.datatype])


def select_outputs(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The outputs to send: those requested by name (each must exist), else all of them."""
    if not requested:
        return list(available)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValidationError(
            f"unknown output {unknown[0]!r}; this model's outputs are {', '.join(available)}"
        )
    return list(dict.fromkeys(requested))


def encode_outputs(
    response: oip.ModelInferResponse, results: dict[str, np.ndarray], names: list[str], raw: bool
) -> None:
    """Add these outputs to the response, as raw_output_contents or as typed contents."""
    for name in names:
        array = np.asarray(results[name])
        if array.dtype == np.float16:
            array = array.astype(np.float32)
        datatype = datatype_of(array.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(_raw_bytes(array, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(_as_bytes(v) for v in array.ravel().tolist())
        else:
            field = _OUTPUTS[f"{array.dtype.kind}{array.dtype.itemsize}"][1]
            getattr(tensor.contents, field).extend(array.ravel().tolist())


def _raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """Row-major little-endian bytes; BYTES elements each prefixed by a 4-byte length, as
    KServe and Triton encode them."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in map(_as_bytes, array.ravel().tolist()))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
