"""Names shared across processes: topics, queues, Redis keys, task names."""

FEATURES_TOPIC = "features"
DEAD_LETTER_TOPIC = "features.dead-letter"
# Every served prediction (featurestore.serving.prediction_log), written to prediction_log.
PREDICTIONS_TOPIC = "predictions"
PREDICTIONS_DEAD_LETTER_TOPIC = "predictions.dead-letter"

WRITE_QUEUE = "duckdb_write_queue"
READ_QUEUE = "duckdb_read_queue"
# Artifact downloads run in a worker of their own: never in the DuckDB service.
MODEL_SYNC_QUEUE = "model_sync_queue"

PROD_MODELS_KEY = "prod_models"
# A new value each time the DuckDB service's worker starts: a killed worker lost the write
# task it held, so the bridge resends its batches in flight when this changes, instead of
# waiting batch_resend_after_s for an answer that never comes.
WRITER_EPOCH_KEY = "duckdb_writer_epoch"


def model_artifact_key(model_id: str, extension: str) -> str:
    """Redis key holding the bytes of one artifact of a production model."""
    return f"model:{model_id}:{extension}"


def model_manifest_key(model_id: str) -> str:
    """Redis key of a served model's manifest (JSON): version, artifacts and their ETags,
    expected features. Written in the same MULTI as the artifacts, so the manifest and the
    artifact keys always describe one version."""
    return f"model_manifest:{model_id}"


def model_sync_status_key(model_id: str) -> str:
    """Redis key of a model's last sync outcome (JSON): last success, last error and why."""
    return f"model_sync_status:{model_id}"


def online_feature_key(entity_id: str) -> str:
    """Redis hash holding the latest value of each feature of one entity."""
    return f"online:{entity_id}"


TASK_PING = "featurestore.ping"
TASK_WRITE_BATCH = "featurestore.write_features_batch"
TASK_READ_MANY = "featurestore.read_many"
TASK_SYNC_MODELS = "featurestore.sync_models"
TASK_RESUME_OFFSET = "featurestore.resume_offset"
TASK_REBUILD_ONLINE = "featurestore.rebuild_online"
TASK_REGISTRY_CHANGE = "featurestore.registry_change"
TASK_TRAINING_SET = "featurestore.training_set"
TASK_WRITE_PREDICTIONS = "featurestore.write_predictions_batch"
TASK_SKEW = "featurestore.skew"
TASK_TRAINING_SET_FROM_LOG = "featurestore.training_set_from_log"
TASK_BACKUP = "featurestore.backup"
