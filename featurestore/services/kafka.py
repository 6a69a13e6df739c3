"""Kafka: a single-node KRaft broker from Maven Central jars, on both loopback families."""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
import uuid
from importlib import resources
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from featurestore.errors import ServiceStartError, ToolMissingError
from featurestore.logs import quoted
from featurestore.services import _proc, jmx
from featurestore.services.base import ManagedService
from featurestore.services.kafka_security import local_sasl_user, security_props

log = logging.getLogger(__name__)

_RESOURCES = resources.files("featurestore.services") / "resources"
_VERSION_IN_PATH = re.compile(r"kafka(?:_2\.1[23])?-(\d+\.\d+\.\d+)")


def new_cluster_id() -> str:
    """A random KRaft cluster id that does not start with "-": the storage tool would take
    it for an option (one id in 64 did, and the broker did not start)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaService(ManagedService):
    """The Kafka broker at settings.kafka_bootstrap; started in KRaft mode when local."""

    name = "kafka"

    @property
    def host_port(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server."""
        first = self.settings.kafka_bootstrap.split(",")[0]
        return _proc.split_host_port(first, 9092)

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def start_timeout(self) -> float:
        return self.settings.kafka_start_timeout_s

    def is_local(self) -> bool:
        return _proc.is_loopback(self.host_port[0])

    def answering_bootstrap(self) -> str | None:
        """'ip:port' of the first address of the bootstrap host where a broker answers."""
        host, port = self.host_port
        ip = _proc.first_answering(host, port)
        return None if ip is None else _proc.format_host_port(ip, port)

    def probe(self) -> str | None:
        bootstrap = self.answering_bootstrap()
        if bootstrap is None:
            return None
        admin = AdminClient(
            {
                **self.settings.kafka_client_config(),
                "bootstrap.servers": bootstrap,
                "socket.timeout.ms": 3000,
            }
        )
        try:
            admin.list_topics(timeout=3)
        except KafkaException:
            return None
        return ""

    def version_hint(self) -> str:
        """Kafka speaks no release version; read it off a local broker's class path."""
        if not self.is_local():
            return ""
        for arg in _proc.listener_cmdline(self.host_port[1]):
            match = _VERSION_IN_PATH.search(arg)
            if match:
                return match.group(1)
        return ""

    # -- files ---------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """Cache folder of this Kafka version's jars."""
        return self.settings.tools_dir / f"kafka-{self.settings.kafka_version}"

    @property
    def data(self) -> Path:
        """Config and log folders of the broker this project runs."""
        return self.settings.data_dir / "kafka"

    def prepare(self) -> None:
        self._resolve_jars()
        jmx.resolve_agent(self.settings)
        self._write_config()
        self._format_storage()

    def _resolve_jars(self) -> None:
        libs = self.home / "libs"
        if (self.home / ".complete").exists():
            return
        mvn = _proc.require_program("mvn", "the Kafka jars are fetched with Maven")
        pom = self.home / "pom.xml"
        self.home.mkdir(parents=True, exist_ok=True)
        pom.write_bytes((_RESOURCES / "kafka-pom.xml").read_bytes())
        shutil.rmtree(libs, ignore_errors=True)
        log.info("kafka_jars_resolve version=%s dest=%s", self.settings.kafka_version, quoted(libs))
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                f"-Dkafka.version={self.settings.kafka_version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ToolMissingError(
                f"mvn could not resolve org.apache.kafka:kafka_2.13:{self.settings.kafka_version}:"
                f"\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        (self.home / ".complete").write_text(self.settings.kafka_version)

    def _write_config(self) -> None:
        _host, port = self.host_port
        controller = self.settings.kafka_controller_port
        name = "PLAINTEXT" if local_sasl_user(self.settings) is None else "SASL_PLAINTEXT"
        listeners = [f"{name}://127.0.0.1:{port}"]
        if _proc.ipv6_loopback_available():
            # KIP-797: one port may be bound twice, once per address family.
            listeners.append(f"{name}6://[::1]:{port}")
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller}",
            "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{controller}"]),
            "advertised.listeners": ",".join(listeners),
            **security_props(self.settings, [name, f"{name}6", "CONTROLLER"]),
            "inter.broker.listener.name": name,
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data / "logs"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        self.data.mkdir(parents=True, exist_ok=True)
        config = self.data / "server.properties"
        # Owner only: with SASL it holds the password.
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        (self.data / "log4j2.xml").write_bytes((_RESOURCES / "kafka-log4j2.xml").read_bytes())

    def _java(self, main: str, *args: str, agents: tuple[str, ...] = ()) -> list[str]:
        java = _proc.require_program("java", "Kafka needs Java 17+")
        return [
            java,
            *agents,
            *self.settings.kafka_heap.split(),
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.data / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.data / 'logs'}",
            "-cp",
            f"{self.home / 'libs'}/*",
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        if (self.data / "logs" / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(self.data / "server.properties"),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceStartError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")

    def command(self) -> list[str]:
        # The broker (not the storage tool) carries the JMX exporter, scraped as job kafka.
        agent = jmx.agent_option(self.settings, self.data)
        return self._java("kafka.Kafka", str(self.data / "server.properties"), agents=(agent,))

    # -- after start ---------------------------------------------------------------------
    def after_ready(self) -> None:
        """Create the features and predictions topics and their dead-letter topics (1
        partition, 1 replica)."""
        bootstrap = self.answering_bootstrap() or self.settings.kafka_bootstrap
        admin = AdminClient({**self.settings.kafka_client_config(), "bootstrap.servers": bootstrap})
        wanted = [
            self.settings.features_topic,
            self.settings.dead_letter_topic,
            self.settings.predictions_topic,
            self.settings.predictions_dead_letter_topic,
        ]
        existing = admin.list_topics(timeout=10).topics
        missing = [
            NewTopic(t, num_partitions=1, replication_factor=1) for t in wanted if t not in existing
        ]
        if not missing:
            return
        for topic, future in admin.create_topics(missing, operation_timeout=30).items():
            try:
                future.result()
                log.info("kafka_topic_created topic=%s", topic)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
