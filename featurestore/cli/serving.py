"""`fstore features`, `fstore predict` (gRPC clients of the running server) and `fstore query`
(a read through the DuckDB service, for operators)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import sys
from collections.abc import Callable
from typing import Any

import grpc
import orjson
import redis
from google.protobuf.json_format import MessageToDict

from featurestore.errors import ServiceError, ValidationError
from featurestore.settings import Settings
from grpc_server.auth import client_channel
from grpc_server.generated import featurestore_pb2 as pb
from grpc_server.generated import featurestore_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 10.0


def _address(settings: Settings) -> str:
    return f"localhost:{settings.grpc_port}"


def _call(settings: Settings, command: str, rpc: Callable[[pb_grpc.FeatureStoreStub], Any]) -> Any:
    """Run one call on a fresh channel; a failed call becomes a one-line message and None."""
    with client_channel(settings, _address(settings)) as channel:
        try:
            return rpc(pb_grpc.FeatureStoreStub(channel))
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            # The channel's own failure (nothing listens) rather than a status the server sent.
            if code is grpc.StatusCode.UNAVAILABLE and "connect" in (details or "").lower():
                print(
                    f"fstore {command}: the gRPC server at {_address(settings)} does not answer "
                    f"({code.name}); is the stack running? (fstore status)",
                    file=sys.stderr,
                )
            else:
                print(f"fstore {command}: {code.name}: {details}", file=sys.stderr)
            return None


def _stamp(message: Any, field: str) -> str:
    if not message.HasField(field):
        return "-"
    value: dt.datetime = getattr(message, field).ToDatetime(dt.UTC)
    return value.isoformat().replace("+00:00", "Z")


def _number(value: float) -> str:
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def cmd_features(settings: Settings, args: argparse.Namespace) -> int:
    """Latest online values of entities' features (gRPC GetOnlineFeatures)."""
    names = [n.strip() for n in args.features.split(",") if n.strip()] if args.features else []
    request = pb.GetOnlineFeaturesRequest(entity_ids=args.entities, feature_names=names)
    reply = _call(
        settings, "features", lambda s: s.GetOnlineFeatures(request, timeout=args.timeout)
    )
    if reply is None:
        return 2
    absent = 0
    if args.format == "json":
        out = []
        for result in reply.results:
            # An entity with nothing online is absent too, as in the table (exit 1).
            absent += not result.features
            features: dict[str, Any] = {}
            for f in result.features:
                absent += not f.present
                features[f.feature_name] = (
                    {"value": f.value, "event_timestamp": _stamp(f, "event_timestamp")}
                    if f.present
                    else None
                )
            out.append({"entity_id": result.entity_id, "features": features})
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        rows = [["ENTITY", "FEATURE", "VALUE", "EVENT_TIMESTAMP"]]
        for result in reply.results:
            if not result.features:
                absent += 1
                rows.append([result.entity_id, "(no features online)", "-", "-"])
            for f in result.features:
                absent += not f.present
                value = _number(f.value) if f.present else "-"
                stamp = _stamp(f, "event_timestamp") if f.present else "(absent)"
                rows.append([result.entity_id, f.feature_name, value, stamp])
        _print_table(rows)
    return 1 if absent else 0


def _overrides(pairs: list[str], entities: list[str]) -> dict[str, pb.FeatureOverrides]:
    values: dict[str, float] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"--set {pair!r}: expected name=value")
        lowered = text.strip().lower()
        try:
            value = {"true": 1.0, "false": 0.0}.get(lowered)
            value = float(text) if value is None else value
        except ValueError:
            raise ValidationError(f"--set {pair!r}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValidationError(f"--set {pair!r}: the value must be finite")
        values[name.strip()] = value
    return {entity: pb.FeatureOverrides(values=values) for entity in entities} if values else {}


def cmd_predict(settings: Settings, args: argparse.Namespace) -> int:
    """Scores of a served model for entities (gRPC Predict)."""
    request = pb.PredictRequest(
        model_id=args.model_id,
        entity_ids=args.entities,
        overrides=_overrides(args.set, args.entities),
    )
    reply = _call(settings, "predict", lambda s: s.Predict(request, timeout=args.timeout))
    if reply is None:
        return 2
    if args.format == "json":
        print(orjson.dumps(_as_dict(reply), option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"model {reply.model_id} version {reply.model_version} (request {reply.request_id})")
    outputs = [o.name for o in reply.predictions[0].outputs] if reply.predictions else []
    rows = [["ENTITY", *(name.upper() for name in outputs)]]
    for p in reply.predictions:
        rows.append(
            [p.entity_id] + [", ".join([*map(_score, o.values), *o.labels]) for o in p.outputs]
        )
    _print_table(rows)
    for p in reply.predictions:
        print(f"\nfeatures used for {p.entity_id}:")
        used = [["  FEATURE", "VALUE", "ORIGIN", "EVENT_TIMESTAMP"]]
        for f in p.features:
            origin = pb.UsedFeature.Origin.Name(f.origin).lower()
            used.append([f"  {f.name}", _number(f.value), origin, _stamp(f, "event_timestamp")])
        _print_table(used)
    return 0


def _score(value: float) -> str:
    return _number(value) if value.is_integer() else f"{value:.6f}"


def _as_dict(message: Any) -> dict[str, Any]:
    return dict(
        MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


# What a parameter's integer can be on its way to the DuckDB service (msgpack: int64 or
# uint64); a larger one failed there with a traceback.
PARAM_INT_RANGE = (-(2**63), 2**64 - 1)


def seconds(text: str) -> float:
    """A --timeout value: a finite number of seconds above 0 (-5 ended in a traceback)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds above 0")
    return value


def typed_param(text: str) -> int | float | str:
    """A --param value: an integer, else a float, else the text itself."""
    try:
        number = int(text)
    except ValueError:
        pass
    else:
        low, high = PARAM_INT_RANGE
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(
                f"{text!r} is an integer outside {low}..{high}; give it as a float "
                f"(--param {float(number):g}) or as text (--param-json '\"{text}\"')"
            )
        return number
    try:
        return float(text)
    except ValueError:
        return text


def json_param(text: str) -> Any:
    """A --param-json value: any JSON value (null, true, a string that looks like a number)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r}") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _require_redis(settings: Settings) -> None:
    """Fail at once, not after the query timeout, when the stack's Redis does not answer."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        where = f"{client.connection_pool.connection_kwargs.get('host')}:" + str(
            client.connection_pool.connection_kwargs.get("port")
        )
        raise ServiceError(
            f"Redis at {where} does not answer; is the stack running? (fstore status)"
        ) from None
    finally:
        client.close()


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    """Run one read-only SQL statement through the DuckDB service (the read path)."""
    from tasks.app import configure
    from tasks.client.query import query_table

    _require_redis(settings)
    table = query_table(configure(settings), args.sql, args.params or None, timeout=args.timeout)
    records = table.to_pylist()
    if args.format == "json":
        print(orjson.dumps(records, default=str, option=orjson.OPT_INDENT_2).decode())
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows([_cell(r[c]) for c in table.column_names] for r in records)
    else:
        rows = [list(table.column_names)]
        rows += [[_cell(r[c]) for c in table.column_names] for r in records]
        _print_table(rows)
        print(f"({len(records)} row{'s' if len(records) != 1 else ''})")
    return 0


def add_parsers(sub: Any) -> None:
    """The features, predict and query subcommands."""
    formats = {"choices": ["table", "json"], "default": "table"}
    features = sub.add_parser("features", help=(cmd_features.__doc__ or "").strip())
    features.set_defaults(handler=cmd_features)
    features.add_argument("entities", nargs="+", metavar="ENTITY")
    features.add_argument("--features", help="comma-separated feature names (default: all)")
    features.add_argument("--format", **formats)
    features.add_argument("--timeout", type=seconds, default=CALL_TIMEOUT_S, help="seconds")

    predict = sub.add_parser("predict", help=(cmd_predict.__doc__ or "").strip())
    predict.set_defaults(handler=cmd_predict)
    predict.add_argument("model_id", metavar="MODEL")
    predict.add_argument("entities", nargs="+", metavar="ENTITY")
    predict.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a feature value for every entity given, overriding the stored one; repeatable",
    )
    predict.add_argument("--format", **formats)
    predict.add_argument("--timeout", type=seconds, default=CALL_TIMEOUT_S, help="seconds")

    query = sub.add_parser("query", help=(cmd_query.__doc__ or "").strip())
    query.set_defaults(handler=cmd_query)
    query.add_argument("sql", metavar="SQL", help="one SELECT; parameters as ? or $1")
    query.add_argument(
        "--param",
        dest="params",
        action="append",
        type=typed_param,
        metavar="VALUE",
        help="a parameter: integer, else float, else text; repeatable, in order",
    )
    query.add_argument(
        "--param-json",
        dest="params",
        action="append",
        type=json_param,
        metavar="JSON",
        help='a parameter as a JSON value (null, true, "42" as text); repeatable',
    )
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.add_argument("--timeout", type=seconds, default=30.0, help="seconds")
