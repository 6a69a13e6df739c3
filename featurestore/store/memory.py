"""DuckDB's memory in the DuckDB service: its buffer manager's limit and where it spills.

memory_limit bounds what DuckDB's buffer manager holds: cached blocks of the tables, their
indexes, sorts, hash tables, a recursive CTE's work tables. Past it, operators that can
spill write to the temp folder (at most max_temp_mib), and the rest fail with an out of
memory error. Values DuckDB builds in one function call (a string, a list) are not counted:
the read guard refuses the functions that build them to a size given by an argument
(featurestore.reads.guard).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from featurestore.settings import Settings
from featurestore.sql import literal


@dataclass(frozen=True)
class Memory:
    """DuckDB's memory limit, and where (and how much) it may spill."""

    limit_mib: int
    temp_dir: Path
    max_temp_mib: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Memory:
        """duckdb_memory_limit_mib, duckdb_temp_path and duckdb_max_temp_mib."""
        return cls(
            settings.duckdb_memory_limit_mib,
            settings.duckdb_temp_path,
            settings.duckdb_max_temp_mib,
        )

    def apply(self, con: duckdb.DuckDBPyConnection) -> None:
        """Set them for every session of the database."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET GLOBAL memory_limit = '{int(self.limit_mib)}MiB'")
        con.execute(f"SET GLOBAL temp_directory = {literal(str(self.temp_dir))}")
        con.execute(f"SET GLOBAL max_temp_directory_size = '{int(self.max_temp_mib)}MiB'")
