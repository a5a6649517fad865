"""One exception hierarchy for faceindex; the CLI maps it to exit codes, the server to HTTP statuses."""

from __future__ import annotations


class FaceIndexError(Exception):
    """Base class of every error faceindex raises on purpose."""

    exit_code = 1


class ImageError(FaceIndexError):
    """An input could not be decoded as an image, or is refused (too large, not a regular file)."""

    exit_code = 65  # EX_DATAERR


class NoFaceError(FaceIndexError):
    """A probe image holds no face (or not the face asked for)."""

    exit_code = 4


class ModelError(FaceIndexError):
    """A model could not be loaded, or an index was made by a different model."""

    exit_code = 70  # EX_SOFTWARE


class CatalogError(FaceIndexError):
    """The catalog is missing, corrupt, locked, or asked for something it does not hold."""

    exit_code = 74  # EX_IOERR


class AuditTrailError(CatalogError):
    """The audit log is missing, emptied, behind or rewritten compared with the head the catalog recorded, so
    nothing may run until an operator looks (`faceindex audit verify`) and, deliberately, `audit reset`s."""

    exit_code = 8


class AuditKeyError(AuditTrailError):
    """A keyed audit log opened without its key, with another key, or a plain log opened with a key."""

    exit_code = 8


class VectorStoreError(FaceIndexError):
    """A vector store (milvus://...) that is misnamed, unreachable, or failed an operation."""

    exit_code = 69  # EX_UNAVAILABLE


class NotFoundError(CatalogError):
    """A person, face, image or source that does not exist."""

    exit_code = 6


class EvaluationError(FaceIndexError):
    """A labelled folder that cannot be evaluated (too few people or images, nothing embedded)."""

    exit_code = 65  # EX_DATAERR


class PolicyError(FaceIndexError):
    """An operation refused by policy (missing purpose, opted-out subject, ...)."""

    exit_code = 77  # EX_NOPERM


class AccessDenied(PolicyError):
    """The actor's role does not allow this operation."""

    exit_code = 77


class ExecutorError(FaceIndexError):
    """The chosen executor cannot run: Ray not installed, a cluster unreachable, every remote worker gone."""

    exit_code = 69  # EX_UNAVAILABLE


# Exit code of `add` when some files failed but the rest were indexed.
EXIT_PARTIAL = 3
