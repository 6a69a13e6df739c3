"""Production artifacts in Azure Blob Storage: the naming rule, listing, matching to the
registry's rows, and size-capped streamed downloads.

Naming rule (README, "Models"): a production artifact of model M is the blob
`M/<name>.<ext>`: exactly one '/', the first part equal to M, no '..' anywhere, no
backslash, a non-empty alphanumeric extension (compared lower-case), and a stem that is
`production` or ends with `_production`, `-production` or `.production`. Every other name
(nested paths, absolute names, `reproduction.onnx`, ...) is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ExponentialRetry

from featurestore.errors import ArtifactError
from featurestore.settings import Settings
from featurestore.store.registry import ModelRecord

AZURE_UNREACHABLE = "azure_unreachable"
_EXTENSION = re.compile(r"[a-z0-9]+")
_STEM_SUFFIXES = ("_production", "-production", ".production")
# The registry's usual artifact types, recognised from the extension when the blob's name
# does not say which row it belongs to.
_KIND_BY_EXTENSION = {
    "onnx": "model",
    "pkl": "model",
    "pickle": "model",
    "joblib": "model",
    "json": "scaler",
}


@dataclass(frozen=True)
class BlobRef:
    """A production blob as listed: where it is, its ETag (unquoted) and size."""

    container: str
    name: str
    extension: str
    etag: str
    size: int

    @property
    def label(self) -> str:
        """The name the registry's artifact type may be given by: 'scaler' of
        'scaler_production.json'."""
        stem = self.name.rpartition("/")[2].rpartition(".")[0]
        return stem[: -len("production")].rstrip("_-.").lower()


def blob_client(
    settings: Settings, *, retries: int = 2, chunk_bytes: int = 4 * 1024 * 1024
) -> BlobServiceClient:
    """The model sync's Azure client (one per process): short retries, since the next sync
    comes within a minute and the SDK's default back-off (15 s, then 45 s...) holds the
    worker that long; 4 MiB gets, so a download streams in bounded pieces."""
    return BlobServiceClient.from_connection_string(
        settings.azure_connection_string,
        retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=retries),
        connection_timeout=10,
        read_timeout=60,
        max_single_get_size=chunk_bytes,
        max_chunk_get_size=chunk_bytes,
    )


def production_extension(blob_name: str, model_id: str) -> str | None:
    """The artifact's extension when blob_name follows the naming rule for model_id, else
    None."""
    if ".." in blob_name or "\\" in blob_name or blob_name.count("/") != 1:
        return None
    folder, filename = blob_name.split("/")
    stem, dot, extension = filename.rpartition(".")
    extension = extension.lower()
    if folder != model_id or not dot or not _EXTENSION.fullmatch(extension):
        return None
    if stem == "production" or stem.endswith(_STEM_SUFFIXES):
        return extension
    return None


def list_production(blobs: BlobServiceClient, container: str, model_id: str) -> list[BlobRef]:
    """The model's production blobs in one container (none when the container does not
    exist). Other Azure errors propagate: the caller decides what unreachable means."""
    found = []
    try:
        for blob in blobs.get_container_client(container).list_blobs(
            name_starts_with=f"{model_id}/"
        ):
            extension = production_extension(blob.name, model_id)
            if extension is not None:
                found.append(
                    BlobRef(container, blob.name, extension, unquote(blob.etag), int(blob.size))
                )
    except ResourceNotFoundError:
        return []
    return found


def list_model(blobs: BlobServiceClient, model_id: str, rows: list[ModelRecord]) -> list[BlobRef]:
    """The model's production blobs in every container its rows name; ArtifactError
    'azure_unreachable' when a listing fails."""
    found: list[BlobRef] = []
    for container in sorted({r.azure_location for r in rows}):
        try:
            found += list_production(blobs, container, model_id)
        except AzureError as exc:
            raise ArtifactError(
                AZURE_UNREACHABLE, f"listing container {container} failed: {type(exc).__name__}"
            ) from exc
    return found


def match(rows: list[ModelRecord], found: list[BlobRef]) -> dict[str, tuple[str, BlobRef]]:
    """extension -> (artifact type, blob) for one model version.

    A row takes, in its own container, the blob whose name is labelled with the row's type
    ('scaler_production.json' for 'scaler'), else the blob whose extension is of that kind
    ('.onnx' for 'model'), else the one blob left when one row is left there. Raises
    ArtifactError 'ambiguous' for two blobs of one extension, 'missing_artifact' for a row
    without a blob. Blobs no row took are published too, typed by their extension.
    """
    by_extension: dict[str, list[BlobRef]] = {}
    for ref in found:
        by_extension.setdefault(ref.extension, []).append(ref)
    clashes = sorted(
        f"{ext}: {', '.join(f'{r.container}/{r.name}' for r in refs)}"
        for ext, refs in by_extension.items()
        if len(refs) > 1
    )
    if clashes:
        raise ArtifactError(
            "ambiguous", "two production artifacts share an extension (" + "; ".join(clashes) + ")"
        )
    taken: dict[BlobRef, str] = {}
    left = list(rows)
    for by_extension_kind in (False, True):
        for row in list(left):
            kind = row.artifact_type.lower()
            for ref in _free(found, taken, row):
                label = _KIND_BY_EXTENSION.get(ref.extension) if by_extension_kind else ref.label
                if label == kind:
                    taken[ref] = row.artifact_type
                    left.remove(row)
                    break
    for row in list(left):
        free = _free(found, taken, row)
        if len(free) == 1 and [r.azure_location for r in left].count(row.azure_location) == 1:
            taken[free[0]] = row.artifact_type
            left.remove(row)
    if left:
        missing = ", ".join(f"{r.artifact_type} (container {r.azure_location})" for r in left)
        raise ArtifactError("missing_artifact", f"no production blob for {missing}")
    return {
        ref.extension: (taken.get(ref) or _KIND_BY_EXTENSION.get(ref.extension, ref.extension), ref)
        for ref in found
    }


def _free(found: list[BlobRef], taken: dict[BlobRef, str], row: ModelRecord) -> list[BlobRef]:
    return [r for r in found if r.container == row.azure_location and r not in taken]


def download(blobs: BlobServiceClient, ref: BlobRef, max_bytes: int) -> tuple[bytes, str]:
    """The blob's bytes and the ETag of what was read, streamed chunk by chunk; ArtifactError
    'too_large' as soon as it grows past max_bytes, 'missing_artifact' when it is gone,
    'azure_unreachable' on any other Azure failure."""
    where = f"{ref.container}/{ref.name}"
    try:
        downloader = blobs.get_blob_client(ref.container, ref.name).download_blob(max_concurrency=1)
        if downloader.size > max_bytes:
            raise _too_large(ref, downloader.size, max_bytes)
        data = bytearray()
        for chunk in downloader.chunks():
            data += chunk
            if len(data) > max_bytes:
                raise _too_large(ref, len(data), max_bytes)
    except ResourceNotFoundError:
        raise ArtifactError("missing_artifact", f"{where} was deleted while syncing") from None
    except AzureError as exc:
        raise ArtifactError(
            AZURE_UNREACHABLE, f"downloading {where} failed: {type(exc).__name__}"
        ) from exc
    return bytes(data), unquote(downloader.properties.etag)


def check_size(ref: BlobRef, max_bytes: int) -> None:
    """Refuse, from the listing alone, a blob over the size limit."""
    if ref.size > max_bytes:
        raise _too_large(ref, ref.size, max_bytes)


def _too_large(ref: BlobRef, size: int, max_bytes: int) -> ArtifactError:
    return ArtifactError(
        "too_large",
        f"{ref.container}/{ref.name} is {size} bytes, over max_artifact_bytes={max_bytes}",
    )


def unquote(etag: str | None) -> str:
    """An ETag without its quotes: listings give 0x8D..., downloads give "0x8D..."."""
    return (etag or "").strip('"')
