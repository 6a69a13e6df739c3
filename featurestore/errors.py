"""The error tree of the project.

FeatureStoreError
 +-- ConfigError            a setting is missing or malformed
 +-- ServiceError           a backing service could not be reached or started
 |    +-- ServiceStartError     started, but it did not become ready in time
 |    +-- ToolMissingError      a program or download it needs is not there
 +-- ValidationError        input (a row, a message, a file) is not acceptable
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
