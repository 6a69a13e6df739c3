"""The one settings object: every address, path, name, size and timeout of the stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from featurestore import constants, credentials

# Azurite's well-known development account: a public constant, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _default_state_dir() -> Path:
    return Path.cwd() / ".state"


def _env_value(value: object) -> str:
    """A settings value as the environment spells it, secrets revealed (for child programs)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, dict):
        return json.dumps({key: _env_value(item) for key, item in value.items()})
    return str(value)


class Settings(BaseSettings):
    """Typed settings read from FSTORE_* environment variables and an optional .env file."""

    model_config = SettingsConfigDict(
        env_prefix="FSTORE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # A validation error names the field and what is wrong; echoing the input would
        # print secrets (a token, a Kafka password) to the terminal and the logs.
        hide_input_in_errors=True,
    )

    state_dir: Path = Field(default_factory=_default_state_dir)
    # Downloaded tools; defaults to <state_dir>/tools. Tests share the project's cache.
    tools_path: Path | None = None

    # Kafka
    kafka_bootstrap: str = "localhost:9092"
    kafka_controller_port: int = 9093
    kafka_version: str = "4.1.1"
    kafka_heap: str = "-Xms256m -Xmx1g"
    features_topic: str = constants.FEATURES_TOPIC
    dead_letter_topic: str = constants.DEAD_LETTER_TOPIC
    predictions_topic: str = constants.PREDICTIONS_TOPIC
    predictions_dead_letter_topic: str = constants.PREDICTIONS_DEAD_LETTER_TOPIC
    kafka_start_timeout_s: float = 120.0
    # librdkafka security options given to every Kafka client of the stack, as JSON in the
    # env, e.g. {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
    # "sasl.username": "fstore", "sasl.password": "..."}. A local broker this project starts
    # gets a SASL_PLAINTEXT listener with that user when they say SASL_PLAINTEXT and PLAIN.
    kafka_security: dict[str, str | SecretStr] = Field(default_factory=dict)

    # Redis (Celery broker, result backend, online store, model artifacts)
    # After validation it carries the password, so every client built from it authenticates;
    # repr=False keeps it out of the settings' repr. rediss:// for TLS (README, "Security").
    redis_url: str = Field(default="redis://localhost:6379/0", repr=False)
    # Unless the URL has one; None: for a Redis on loopback, the one generated into
    # <state_dir>/secrets/redis-password. Empty: no password (not for production).
    redis_password: SecretStr | None = None
    # A Redis this project starts for a rediss:// URL serves TLS with this certificate and key;
    # clients check the server's certificate against redis_tls_ca_file (PEM files).
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    redis_tls_ca_file: Path | None = None
    redis_start_timeout_s: float = 20.0

    # Azure Blob Storage; the default is Azurite on loopback.
    azure_connection_string: str = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:10000/{AZURITE_ACCOUNT};"
    )
    azure_container: str = "ai-models"
    azurite_version: str = "3.35.0"
    azurite_start_timeout_s: float = 60.0

    # DuckDB service
    duckdb_path: Path | None = None
    write_queue: str = constants.WRITE_QUEUE
    read_queue: str = constants.READ_QUEUE
    read_threads: int = 50
    # The read path's speed-ups, each switchable so that `make bench-speedups` can measure
    # what it pays against the plain way in one run (README, Benchmarks).
    read_grouping: bool = True  # reads of one batch sharing a statement run as one UNION ALL
    worker_pool: Literal["last_idle", "celery"] = "last_idle"  # tasks.thread_pool or Celery's
    read_result_store: Literal["one_trip", "celery"] = "one_trip"  # tasks.result_backend
    # DuckDB's own threads per query. One: the service runs many small queries side by side
    # on few cores, and a second thread added hand-over time to a point read (README, Benchmarks).
    duckdb_threads: int = 1
    # DuckDB's threads while a training set is built (featurestore.store.job_threads), then
    # duckdb_threads again: on 2 idle cores the build's wall time nearly halves (README,
    # "Against Feast").
    training_threads: int = Field(default=2, ge=1)
    # How often new rows are folded into the latest-values table (its staleness bound).
    latest_merge_interval_s: float = 1.0
    # The DuckDB worker's GIL switch interval: a write's Python holding the GIL keeps a woken
    # read thread waiting up to that long. CPython's 5 ms kept: 0.5 ms was not better in the
    # stack under load (README, reads under write load).
    worker_switch_interval_ms: float = Field(default=5.0, gt=0)
    # Threads of the worker's write lane: write tasks run on these only (0: on the pool's
    # threads with the reads); a lower read p99 under ingest (README, reads under write load).
    worker_write_threads: int = Field(default=2, ge=0)
    # OS niceness added to the latest-values merger's thread and to the write lane's threads
    # (Linux sets it per thread), so that background work yields a contended core to reads;
    # 0: no gain measured, a merge's checkpoint holds reads whatever its priority (README,
    # reads under write load).
    latest_merge_nice: int = Field(default=0, ge=0, le=19)
    worker_write_nice: int = Field(default=0, ge=0, le=19)
    # Benchmarks only: the worker appends each read task's step times here (tasks.read_trace).
    read_trace_file: Path | None = None
    # Bounds of one read in the DuckDB service (README, "Reads"): stopped when its caller's
    # deadline passes and after read_time_limit_s at most; a result past either size fails.
    read_time_limit_s: float = Field(default=30.0, gt=0)
    read_max_rows: int = Field(default=1_000_000, ge=1)
    read_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # DuckDB's buffer manager (cached blocks, sorts, hash tables, CTE work tables) stays under
    # this; past it a query spills to the temp folder (at most duckdb_max_temp_mib) or fails.
    duckdb_memory_limit_mib: int = Field(default=320, ge=64)
    duckdb_temp_dir: Path | None = None  # default <state_dir>/data/duckdb-tmp
    duckdb_max_temp_mib: int = Field(default=4096, ge=0)
    # WAL size at which a commit checkpoints (DuckDB's default 16). A checkpoint rewrites every
    # row group of latest_features that a merge updated, and a latest read waits for it; past
    # a checkpoint, reads walk the pending updates, slower as they pile up: 64 MiB is one
    # checkpoint every ~30 s at 20k events/s (README, reads under write load).
    duckdb_checkpoint_threshold_mib: int = Field(default=64, ge=1)

    # Bridge batching
    batch_max_rows: int = 10_000
    batch_max_wait_s: float = 0.5
    # The predictions topic's batches: nobody waits for a logged prediction's row, and each
    # batch is a write task and a DuckDB transaction of ~7 ms CPU before its rows (README,
    # Prediction log: 2 s against 0.5 s cut the worker's CPU per record).
    prediction_batch_max_wait_s: float = Field(default=2.0, gt=0)
    max_batches_in_flight: int = 32
    max_message_bytes: int = 900_000
    batch_resend_after_s: float = 120.0
    # A write batch that fails this many times goes to the dead-letter topic (with the
    # reason) instead of blocking its partition's commits forever.
    batch_max_attempts: int = 5
    drain_timeout_s: float = 60.0
    query_timeout_s: float = 30.0
    consumer_group: str = "featurestore-bridge"
    # The bridge's static group membership id (Kafka group.instance.id); default
    # "<consumer_group>-<host>". Two bridges of one group on one host need one each: the
    # broker fences the older of two members with the same id.
    bridge_instance_id: str | None = None
    # Kafka's session timeout of that static member: a bridge restarted within it takes its
    # partitions back at once; one stopped for good holds them this long.
    bridge_session_timeout_s: float = Field(default=10.0, ge=6.0)

    # Model sync and serving
    model_sync_interval_s: float = 60.0
    model_sync_queue: str = constants.MODEL_SYNC_QUEUE
    # A blob over this size is refused (and logged), never downloaded.
    max_artifact_bytes: int = 512 * 1024 * 1024
    # Pickle and joblib artifacts run arbitrary code when loaded: refused unless an operator
    # opts in (see README, "Models").
    allow_pickle: bool = False
    # How often a gRPC process looks for newly published model versions.
    model_refresh_interval_s: float = 1.0
    # Per gRPC call.
    max_entities_per_call: int = 1000
    grpc_max_message_bytes: int = 4 * 1024 * 1024
    # The gRPC process's GIL switch interval. CPython's 5 ms lets a thread that holds the GIL
    # keep a woken handler waiting that long; 1 ms measured lower p50 and p99 at the same
    # CPU per call (README, Serving).
    grpc_switch_interval_ms: float = Field(default=1.0, gt=0)
    metrics_port_model_sync: int = 9105

    # Prediction log (featurestore.serving.prediction_log): Predict and ModelInfer calls sent
    # to the predictions topic without blocking the response, then into prediction_log.
    prediction_log_enabled: bool = True
    # Models whose calls are logged; empty means every model. Comma-separated in the env.
    prediction_log_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Share of calls logged (whole calls: every entity of a sampled call is logged).
    prediction_log_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # Calls held while Kafka is slow or down; past it the oldest are dropped (and counted).
    prediction_log_buffer: int = Field(default=10_000, ge=1)
    # A record Kafka has not confirmed within this is dropped (and counted), never resent.
    prediction_log_delivery_timeout_s: float = 120.0
    # How long the gRPC process's producer gathers records before a produce request: each
    # request wakes the broker and, through its fetch, the bridge; 250 against 20 halved the
    # broker's CPU per record (median 0.32 -> 0.15 CPU-s per 1k; README, Prediction log).
    prediction_log_linger_ms: int = Field(default=250, ge=0)

    # The niceness of the programs whose work can wait (featurestore.priority: the worker,
    # bridge, model sync, beat, Flower, Kafka, Azurite, Prometheus, Alertmanager, exporters):
    # on shared cores a Predict's thread, woken by its reply, then waits for a core less
    # often. The first 12 pairs did not test it (autogroups, README, Serving); four pairs
    # since, on a slow host, favoured 10 in three: 0, every program equal, until a quiet
    # run says otherwise.
    batch_nice: int = Field(default=0, ge=0, le=19)

    # Serving and observability
    grpc_host: str = "[::]"
    grpc_port: int = 50051
    # gRPC server processes sharing the port, one group (grpc_server/processes.py): Python's
    # server is held to about one core by the GIL; two measured a higher ceiling and a lower
    # CPU per call beside the stack on 2 cores (README, Serving).
    grpc_processes: int = Field(default=2, ge=1, le=16)
    # TLS of the gRPC server (PEM files; both or neither). Clients trust grpc_tls_root_cert,
    # by default the server's own certificate (a self-signed one).
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    grpc_tls_root_cert: Path | None = None
    # When set, every call but grpc.health.v1 must carry "authorization: Bearer <token>".
    grpc_auth_token: SecretStr | None = None
    flower_port: int = 5555
    # Flower's basic auth; no password: the one generated into <state_dir>/secrets/.
    flower_user: str = "fstore"
    flower_password: SecretStr | None = None
    # Where every program's /metrics listens: loopback unless Prometheus runs elsewhere.
    metrics_host: str = "127.0.0.1"
    metrics_port_worker: int = 9101
    metrics_port_bridge: int = 9102
    metrics_port_grpc: int = 9103
    # The gRPC processes after the first: this port, then the next ones.
    metrics_port_grpc_extra: int = 9106
    metrics_port_beat: int = 9104
    prometheus_port: int = 9090
    prometheus_scrape_interval_s: float = 5.0
    # 9093, Alertmanager's usual port, is Kafka's controller port here.
    alertmanager_port: int = 9094
    # Alertmanager's configuration; None: prometheus/alertmanager.yml (a receiver that does
    # nothing). Point it at a file with a webhook receiver, say (README, "Alerts").
    alertmanager_config: Path | None = None
    redis_exporter_port: int = 9121
    # The Prometheus JMX exporter's Java agent inside the broker this project starts.
    kafka_jmx_exporter_port: int = 9404
    jmx_exporter_version: str = "1.0.1"

    @field_validator("prediction_log_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        """FSTORE_PREDICTION_LOG_MODELS=a,b gives ["a", "b"]."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("kafka_security", mode="after")
    @classmethod
    def _check_kafka_security(cls, value: dict[str, str | SecretStr]) -> dict[str, str | SecretStr]:
        """Only security options; secret values held as SecretStr."""
        return credentials.kafka_security_options(value)

    @field_validator("grpc_auth_token", mode="after")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        """A token a metadata value can carry: printable ASCII without spaces."""
        if value is not None:
            credentials.check_grpc_token(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _check_grpc_tls(self) -> Settings:
        """A TLS certificate goes with its key."""
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ValueError("FSTORE_GRPC_TLS_CERT and FSTORE_GRPC_TLS_KEY go together: set both")
        return self

    @model_validator(mode="after")
    def _check_flower_auth(self) -> Settings:
        """Flower splits FLOWER_BASIC_AUTH at commas and each entry at its first colon."""
        password = None if self.flower_password is None else self.flower_password.get_secret_value()
        credentials.check_flower_auth(self.flower_user, password)
        return self

    @model_validator(mode="after")
    def _resolve_redis_password(self) -> Settings:
        """Put the password (given, in the URL, or the local stack's) into redis_url."""
        # The URL's wins: a dump of these settings (model_dump_json) masks redis_password
        # but keeps the URL whole, and must load back as the same settings.
        password = credentials.url_password(self.redis_url)
        if password is None and self.redis_password is not None:
            password = self.redis_password.get_secret_value()
        if password is None and credentials.is_loopback_host(urlsplit(self.redis_url).hostname):
            password = credentials.local_secret(self.state_dir, credentials.REDIS_PASSWORD)
        self.redis_password = None if password is None else SecretStr(password)
        self.redis_url = credentials.redis_url_with(
            self.redis_url, password or None, self.redis_tls_ca_file
        )
        return self

    def flower_basic_auth(self) -> str:
        """Flower's "user:password" (the generated password unless one is set)."""
        if self.flower_password is not None:
            password = self.flower_password.get_secret_value()
        else:
            password = credentials.local_secret(self.state_dir, credentials.FLOWER_PASSWORD)
        return f"{self.flower_user}:{password}"

    def kafka_client_config(self) -> dict[str, str | int | float | bool]:
        """bootstrap.servers and the security options, for any confluent-kafka client."""
        # Typed as confluent-kafka's clients take their config (values all str here).
        config: dict[str, str | int | float | bool] = {"bootstrap.servers": self.kafka_bootstrap}
        config.update({key: _env_value(item) for key, item in self.kafka_security.items()})
        return config

    @property
    def logs_dir(self) -> Path:
        """Folder of every program's log."""
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """Folder of pid files and locks."""
        return self.state_dir / "run"

    @property
    def tools_dir(self) -> Path:
        """Cache folder of downloaded tools (Kafka jars, Azurite)."""
        return self.tools_path or self.state_dir / "tools"

    @property
    def data_dir(self) -> Path:
        """Folder of every service's data."""
        return self.state_dir / "data"

    @property
    def metrics_ports_grpc(self) -> list[int]:
        """The metrics port of each gRPC process (grpc_processes of them), by index."""
        extra = self.metrics_port_grpc_extra
        return [self.metrics_port_grpc, *range(extra, extra + self.grpc_processes - 1)]

    @property
    def duckdb_file(self) -> Path:
        """The DuckDB database file owned by the DuckDB service worker."""
        return self.duckdb_path or self.data_dir / "features.duckdb"

    @property
    def duckdb_temp_path(self) -> Path:
        """Where DuckDB spills what does not fit its memory limit."""
        return self.duckdb_temp_dir or self.data_dir / "duckdb-tmp"

    def to_env(self) -> dict[str, str]:
        """These settings as FSTORE_* variables, for the programs this process starts."""
        prefix = str(self.model_config.get("env_prefix", ""))
        return {
            f"{prefix}{name}".upper(): _env_value(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def ensure_dirs(self) -> None:
        """Create the state folders."""
        for path in (self.logs_dir, self.run_dir, self.tools_dir, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)


def load_settings() -> Settings:
    """Build the settings once per process, at start-up."""
    return Settings()
