"""What the route modules share with app.py's create_app: the Context handed to each router, and the Principal.

create_app builds the engine, the lock, the rate limiter and the dependencies (authentication, purpose and case)
once; each routes_*.py module receives them in one Context and registers its endpoints on an APIRouter that
create_app includes in place, so every route keeps the app's middleware (authentication from the headers before
any body is read, the body limit, metrics) and error handling.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..engine import FaceIndex, key_actor
from ..text import identity_key
from .guard import WorkQueue
from .jobs import Jobs


@dataclass
class Principal:
    key_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        return key_actor(self.name, self.key_id)

    @property
    def user(self) -> tuple[str, str]:
        """The rate limiter's key: a user's several keys share one budget."""
        return ("user", identity_key(self.name))


@dataclass
class Context:
    """What the route modules share with app.py's create_app."""

    settings: Settings
    engine: FaceIndex
    lock: Any  # the engine's RLock
    jobs: Jobs
    principal: Callable  # the dependency that authenticates and rate-limits a request
    why: Callable  # the dependency giving an audited read's (purpose, case), checked against the policy
    as_: Callable[[Any], FaceIndex]
    read_image: Callable  # async (UploadFile) -> bytes, 413/415/422 on bad uploads
    charge: Callable  # charge(p, pixels=...) for decoding work, 429 when over budget
    upload_pixels: Callable[[bytes], int]
    work: WorkQueue  # engine work of async endpoints: in threads, bounded, 503 beyond
    locked: Callable  # locked(fn, *args, **kwargs): fn called holding the lock (for work.run)
    searches: Any  # the faceindex_searches counter (/metrics)
    error: Callable[..., Exception]  # ApiError(status, code, message)
    max_body: int
    slug: Callable[[str], str]
    image_suffix: Any  # compiled regex of the image suffixes the folder walk picks up
