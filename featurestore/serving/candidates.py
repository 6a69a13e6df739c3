"""What a sync judges before it serves a version: one version per model, whether its blobs
are what is served, and whether they were already refused."""

from __future__ import annotations

from featurestore.errors import ArtifactError
from featurestore.serving.artifacts import BlobRef
from featurestore.serving.manifest import ArtifactInfo, Manifest, SyncStatus
from featurestore.settings import Settings
from featurestore.store.registry import ExpectedFeature, ModelRecord

Plan = dict[str, tuple[str, BlobRef]]  # extension -> (artifact type, blob)


def one_version(rows: list[ModelRecord]) -> list[ExpectedFeature]:
    """The expected features of the one production version; ArtifactError if ambiguous."""
    versions = sorted({r.version for r in rows})
    if len(versions) > 1:
        raise ArtifactError("ambiguous", f"several production versions: {', '.join(versions)}")
    features = rows[0].expected_features
    if any(r.expected_features != features for r in rows):
        raise ArtifactError(
            "features_mismatch", "the version's artifacts declare different expected_features"
        )
    return features


def same(
    served: Manifest,
    version: str,
    features: list[ExpectedFeature],
    plan: Plan,
) -> bool:
    """True when the served manifest is this version with these very blobs."""
    return (
        served.version == version
        and served.expected_features == features
        and served.artifacts.keys() == plan.keys()
        and all(holds(served.artifacts[ext], kind, ref) for ext, (kind, ref) in plan.items())
    )


def fingerprint(
    settings: Settings,
    version: str,
    features: list[ExpectedFeature],
    plan: Plan,
) -> str:
    """Names what a refusal judged: the version, its features, every blob's ETag, and the
    settings that judge (a changed allow_pickle or size limit judges again)."""
    blobs = ",".join(
        f"{ext}={kind}:{ref.container}/{ref.name}@{ref.etag}"
        for ext, (kind, ref) in sorted(plan.items())
    )
    names = ",".join(f"{f.index}:{f.name}:{f.type}" for f in features)
    judge = f"pickle={settings.allow_pickle};max={settings.max_artifact_bytes}"
    return f"{version}|{names}|{blobs}|{judge}"


def holds(info: ArtifactInfo, kind: str, ref: BlobRef) -> bool:
    """True when the served artifact is this blob's current content."""
    return (info.artifact_type, info.container, info.blob, info.etag) == (
        kind,
        ref.container,
        ref.name,
        ref.etag,
    )


def refused_again(status: SyncStatus, fingerprint: str) -> ArtifactError:
    """The refusal recorded in `status`, raised again for unchanged blobs."""
    prefix = "unchanged since refused: "
    earlier = status.last_error or "-"
    message = earlier if earlier.startswith(prefix) else prefix + earlier
    return ArtifactError(status.last_error_reason or "refused", message, fingerprint=fingerprint)
