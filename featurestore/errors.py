"""The error tree of the project.

FeatureStoreError
 +-- ConfigError            a setting is missing or malformed
 +-- ServiceError           a backing service could not be reached or started
 |    +-- ServiceStartError     started, but it did not become ready in time
 |    +-- ToolMissingError      a program or download it needs is not there
 |    +-- QueryTimeoutError     a read passed its time limit (the caller's or the service's)
 +-- ValidationError        input (a row, a message, a file) is not acceptable
 |    +-- LimitError            a request is over a configured limit (size, entities)
 +-- QueryError             DuckDB failed a read (its message is kept)
 |    +-- ReadOnlyError     a read tried to write or ran several statements
 |    +-- ReadLimitError    a read's result or memory went past a limit; names the limit
 +-- ModelNotFoundError     the model is not served (not in production, or not synced)
 +-- MissingFeaturesError   a prediction lacks feature values; names each one
 +-- ArtifactError          a model artifact failed validation; `reason` labels why
 +-- BackupError            a backup or restore cannot go on; the message says why
"""


class FeatureStoreError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(FeatureStoreError):
    """A setting is missing or malformed."""


class ServiceError(FeatureStoreError):
    """A backing service could not be reached or started."""


class ServiceStartError(ServiceError):
    """A service was started but did not become ready; the message names its log."""


class ToolMissingError(ServiceError):
    """A program or download needed to start a service is not available."""


class ValidationError(FeatureStoreError):
    """Input is not acceptable; the message says what and where."""


class QueryError(FeatureStoreError):
    """DuckDB refused or failed a read; the message is DuckDB's own."""


class ReadOnlyError(QueryError):
    """A read was asked to write, change settings, or run more than one statement."""


class ReadLimitError(QueryError):
    """A read's result (rows, bytes) or memory went past a limit; the message names it."""


class QueryTimeoutError(ServiceError):
    """A read passed its time limit: its caller stopped waiting, or the DuckDB service
    stopped it (the message says which, and the limit)."""


class LimitError(ValidationError):
    """A request is over a configured limit; the message names the limit."""


class ModelNotFoundError(FeatureStoreError):
    """The model is not served: not in production, or not synced into Redis yet."""


class MissingFeaturesError(FeatureStoreError):
    """Feature values a model needs are missing; `missing` maps entity id -> feature names."""

    def __init__(self, model_id: str, missing: dict[str, list[str]]) -> None:
        self.model_id = model_id
        self.missing = missing
        parts = "; ".join(f"{entity}: {', '.join(names)}" for entity, names in missing.items())
        super().__init__(f"model {model_id} is missing features ({parts})")


class InputRangeError(ValidationError):
    """Values a model cannot take: outside its input's range once cast and scaled; `cells`
    holds their (row, feature) positions."""

    def __init__(self, message: str, cells: list[tuple[int, int]]) -> None:
        self.cells = cells
        super().__init__(message)


class UnusableFeaturesError(FeatureStoreError):
    """Stored feature values a model cannot take (an InputRangeError the caller did not
    cause); the message names the values, features and entities."""


class ArtifactError(FeatureStoreError):
    """A model artifact failed validation; `reason` is a short label (for metrics)."""

    def __init__(self, reason: str, message: str, fingerprint: str | None = None) -> None:
        self.reason = reason
        # What was judged (set by the sync), so an unchanged refusal is not judged again.
        self.fingerprint = fingerprint
        super().__init__(message)


class BackupError(FeatureStoreError):
    """A backup or restore cannot go on (stack running, checksum, Kafka retention, ...)."""
