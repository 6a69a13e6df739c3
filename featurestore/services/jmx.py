"""The Prometheus JMX exporter's Java agent (Maven Central), attached to the Kafka broker."""

from __future__ import annotations

import logging
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from featurestore.errors import ToolMissingError
from featurestore.logs import quoted
from featurestore.services import _proc
from featurestore.settings import Settings

log = logging.getLogger(__name__)

ARTIFACT = "io.prometheus.jmx:jmx_prometheus_javaagent"
_RULES = resources.files("featurestore.services") / "resources" / "kafka-jmx-exporter.yml"


def agent_jar(settings: Settings) -> Path:
    """Where this version's agent jar is cached."""
    version = settings.jmx_exporter_version
    folder = settings.tools_dir / f"jmx-exporter-{version}"
    return folder / f"jmx_prometheus_javaagent-{version}.jar"


def resolve_agent(settings: Settings) -> Path:
    """The agent jar, fetched with mvn from Maven Central on first use."""
    jar = agent_jar(settings)
    if jar.is_file():
        return jar
    mvn = _proc.require_program("mvn", "the JMX exporter agent is fetched with Maven")
    coordinates = f"{ARTIFACT}:{settings.jmx_exporter_version}"
    log.info("jmx_agent_resolve artifact=%s dest=%s", coordinates, quoted(jar.parent))
    staging = jar.parent / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "dependency:copy",
            f"-Dartifact={coordinates}",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=settings.tools_dir,
    )
    fetched = staging / jar.name
    if result.returncode != 0 or not fetched.is_file():
        raise ToolMissingError(
            f"mvn could not resolve {coordinates}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    # Renamed into place last, so a jar that is there is whole.
    fetched.replace(jar)
    shutil.rmtree(staging, ignore_errors=True)
    return jar


def agent_option(settings: Settings, folder: Path) -> str:
    """The broker's -javaagent option: metrics on loopback at kafka_jmx_exporter_port."""
    jar = resolve_agent(settings)
    rules = folder / "jmx-exporter.yml"
    rules.write_bytes(_RULES.read_bytes())
    return f"-javaagent:{jar}=127.0.0.1:{settings.kafka_jmx_exporter_port}:{rules}"
