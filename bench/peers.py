"""make bench-peers: this feature store against Feast, side by side, in one run.

Feast (pinned, bench.peers_support.FEAST_VERSION) runs from a virtual environment of its
own under .state/peers, as subprocesses; this process never imports it. Both get the same
data: a history of 200k entities x 5 events x 10 features (one wide Parquet file for Feast,
10M long rows written through our write task), the latest row of 100k entities online, a
1M-row spine, 1M events to ingest. Workloads, each on both, with their values compared:
the point-in-time training set (ours against Feast's DuckDB offline store; Feast's default
file store is run too, to count the spine rows it drops), one entity's features over the
network (GetOnlineFeatures over gRPC against `feast serve` with a keep-alive HTTP client,
in turn), 100 entities (the same, and Feast's SDK in-process), the ingestion of 1M events
into the online and offline stores (`fstore produce`'s producer through Kafka, the bridge
and the worker, against Feast's push). The last line of output is one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import bench_settings, latest_catch_up_s, percentile, running_stack
from bench.peers_support import (
    FEAST_VERSION,
    SPINE_ROWS,
    STATE,
    FeastUnavailableError,
    feast_python,
    feast_redis,
    make_data,
    run_feast,
)
from bench.peers_workloads import ingest_ours, load_history, online, training
from featurestore.logs import setup_logging
from featurestore.settings import Settings

log = logging.getLogger("bench.peers")

FEAST_REDIS_PORT = 7480


def settings_for(folder: Path) -> Settings:
    """Our stack on ports of its own (no other benchmark's)."""
    base = Settings()
    return bench_settings(
        folder / "state",
        redis_url="redis://localhost:7479/0",
        kafka_bootstrap="localhost:10192",
        kafka_controller_port=10193,
        grpc_port=51151,
        flower_port=6655,
        metrics_port_worker=10201,
        metrics_port_bridge=10202,
        metrics_port_grpc=10203,
        metrics_port_grpc_extra=10206,
        metrics_port_beat=10204,
        metrics_port_model_sync=10205,
        prometheus_port=10190,
        alertmanager_port=10194,
        redis_exporter_port=10221,
        kafka_jmx_exporter_port=10504,
        azure_connection_string=base.azure_connection_string.replace(":10000/", ":11100/"),
    )


def feast_setup(folder: Path, paths: dict[str, Path], repos: dict[str, Path]) -> Any:
    """Feast's repositories and online load, started in the background."""
    return subprocess.Popen(
        [str(feast_python()), str(Path(__file__).with_name("peers_feast.py")), "setup",
         "--repo", str(repos["duckdb"]), "--file-repo", str(repos["file"]),
         "--redis-port", str(FEAST_REDIS_PORT), "--history", str(paths["history"]),
         "--pushed", str(paths["pushed"]), "--online", str(paths["online"])],
        stdout=subprocess.PIPE, text=True, cwd=STATE,
    )  # fmt: skip


def run(folder: Path) -> dict[str, Any]:
    """Every workload on both systems; on ours alone when Feast cannot be installed or set
    up here (the reason is logged and kept in the results)."""
    results: dict[str, Any] = {}
    try:
        feast_python()
        feast = True
    except FeastUnavailableError as exc:
        log.error("peers_feast_unavailable reason=%s", json.dumps(str(exc)))
        results["feast_unavailable"] = str(exc)
        feast = False
    paths = make_data(folder)
    repos = {"duckdb": folder / "feast_repo", "file": folder / "feast_repo_file"}
    settings = settings_for(folder)
    with contextlib.ExitStack() as stack:
        if feast:
            stack.enter_context(feast_redis(FEAST_REDIS_PORT, folder))
            setup = feast_setup(folder, paths, repos)
        stack.enter_context(running_stack(settings))
        load_history(settings, paths["history"])
        log.info("peers_loaded latest_catch_up_s=%.1f", latest_catch_up_s(settings))
        if feast:
            out, _ = setup.communicate(timeout=1800)
            if setup.returncode == 0:
                results["feast_setup"] = json.loads(out.strip().splitlines()[-1])
                log.info("peers_feast_setup %s", results["feast_setup"])
            else:
                results["feast_unavailable"] = f"feast setup exited {setup.returncode}"
                log.error("peers_feast_unavailable reason=%s", results["feast_unavailable"])
                feast = False
        results["training"] = training(settings, paths, repos, feast)
        results["online"] = online(settings, repos["duckdb"], feast)
        results["ingest_ours"] = ingest_ours(settings, paths["ingest_long"])
        log.info("peers_ingest side=ours %s", results["ingest_ours"])
        if feast:
            results["ingest_feast"] = run_feast(
                "push", "--repo", str(repos["duckdb"]), "--events", str(paths["ingest_wide"]),
                "--pushed", str(paths["pushed"]),
            )  # fmt: skip
            log.info("peers_ingest side=feast %s", results["ingest_feast"])
    return results


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """For each workload ours, Feast's (null without Feast) and ours / Feast's; then the
    checks. Feast's 100-entity figure is the better of its feature server and its SDK."""
    tr, on = results["training"], results["online"]
    feast = "feast_unavailable" not in results
    sdk = on.get("feast_sdk_many", {})
    samples = on["samples"]

    ours: dict[str, float] = {
        "training_set_s": min(r["seconds"] for r in tr["ours"]),
        "training_set_cpu_s": min(r["cpu_seconds"] for r in tr["ours"]),
        "ingest_events_per_s": results["ingest_ours"]["events"] / results["ingest_ours"]["seconds"],
    }
    theirs: dict[str, float] = {}
    if feast:
        theirs["training_set_s"] = min(r["seconds"] for r in tr["feast"])
        theirs["training_set_cpu_s"] = min(r["cpu_seconds"] for r in tr["feast"])
        pushed = results["ingest_feast"]
        theirs["ingest_events_per_s"] = pushed["events"] / pushed["seconds"]
    for size, count in (("one", 1), ("many", 100)):
        for q in (50, 99):
            name = f"online_{count}_p{q}_ms"
            ours[name] = percentile(samples[f"{size}_ours"], q / 100)
            if feast:
                theirs[name] = percentile(samples[f"{size}_feast"], q / 100)
                if size == "many":
                    theirs[name] = min(theirs[name], float(sdk[f"p{q}_ms"]))
    out: dict[str, Any] = {"feast_version": FEAST_VERSION if feast else None}
    for name, mine in ours.items():
        other = theirs.get(name)
        out[f"{name}_ours"] = round(mine, 3)
        out[f"{name}_feast"] = None if other is None else round(other, 3)
        out[f"{name}_ratio"] = None if other is None else round(mine / other, 3)
    if feast:
        out["online_100_feast_server_p50_ms"] = round(percentile(samples["many_feast"], 0.5), 3)
        out["online_100_feast_sdk_p50_ms"] = round(sdk["p50_ms"], 3)
        out["feast_file_store_training_s"] = round(tr["feast_file"]["seconds"], 3)
        out["feast_file_store_rows_dropped"] = SPINE_ROWS - int(tr["feast_file"]["rows"])
        check = tr["check_duckdb"]
        out["training_values_differ"] = check["differ"] + check["unmatched"]
        out["online_values_differ"] = on["check"]["mismatches"] + on["check"]["sdk_mismatches"]
        out["feast_offline_rows_after_push"] = results["ingest_feast"]["offline_rows"]
    return out


def table(out: dict[str, Any]) -> str:
    """The figures side by side (for events/s higher is better, elsewhere lower)."""
    head = f"feast {out['feast_version'] or '(unavailable)'}"
    lines = [f"{'workload':<22} {'ours':>12} {head:>20} {'ours/feast':>11}"]
    for key in out:
        if key.endswith("_ratio"):
            name = key.removesuffix("_ratio")
            theirs, ratio = out[name + "_feast"], out[key]
            lines.append(
                f"{name:<22} {out[name + '_ours']:>12,.3f} "
                f"{'-' if theirs is None else format(theirs, ',.3f'):>20} "
                f"{'-' if ratio is None else format(ratio, '.3f'):>11}"
            )
    return "\n".join(lines)


def main() -> None:
    """Run, print the table, then the JSON summary as the last line."""
    setup_logging("WARNING")
    for name in ("bench", "featurestore.progress"):
        logging.getLogger(name).setLevel(logging.INFO)
    folder = STATE / "run"
    shutil.rmtree(folder, ignore_errors=True)
    results = run(folder)
    for path in folder.iterdir():  # the data and our stack's state: hundreds of MB
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (folder / "results.json").write_text(json.dumps(results, default=str))
    out = summary(results)
    print(table(out))
    if "feast_unavailable" in results:
        print(f"Feast unavailable: {results['feast_unavailable']}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
