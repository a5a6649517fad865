"""What keeps the server up under abuse: work-charged rate limits, a streaming body limit, a bounded queue for
engine work off the event loop, and the security headers of the web page."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

# Work units: a request costs 1; decoding pixels and returning faces cost more, so that one expensive request
# (a 60-megapixel photo) is charged like the many cheap ones it is worth.
PIXELS_PER_UNIT = 2_000_000
FACES_PER_UNIT = 100
IMAGE_REQUEST_COST = 0.1  # a crop of a small photo: a result page fetches dozens

# The web page loads nothing from elsewhere and runs no inline script; nobody may frame it.
WEB_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class RateLimiter:
    """A token bucket per key (a user, a client address): `per_minute` work units, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.buckets: dict[object, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def _level(self, key: object, now: float) -> float:
        tokens, last = self.buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def take(self, key: object, cost: float = 1.0) -> float:
        """0 when allowed (and charged), else seconds until it would be. A cost above the bucket's capacity is
        charged as the capacity: it needs a full bucket."""
        cost = min(cost, self.capacity)
        now = time.monotonic()
        with self.lock:
            tokens = self._level(key, now)
            if tokens >= cost:
                self.buckets[key] = (tokens - cost, now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (cost - tokens) / self.rate

    def charge(self, key: object, cost: float) -> None:
        """Charge work found out after it was done (faces returned); the bucket may go into debt."""
        now = time.monotonic()
        with self.lock:
            self.buckets[key] = (max(-self.capacity, self._level(key, now) - cost), now)

    def wait(self, key: object, need: float = 1.0) -> float:
        """Seconds until the bucket holds `need` units (0 when it does), without charging anything."""
        with self.lock:
            tokens = self._level(key, time.monotonic())
        return 0.0 if tokens >= need else (need - tokens) / self.rate


class Busy(Exception):
    """Every slot for engine work is taken: answer 503 with Retry-After."""


class WorkQueue:
    """Engine work runs in worker threads, never on the event loop (health checks and static files stay instant),
    and at most `slots` requests wait for it at once: one more is refused at once (Busy) rather than queued."""

    def __init__(self, slots: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._slots.acquire(blocking=False):
            raise Busy()
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        finally:
            self._slots.release()


class _TooLarge(Exception):
    pass


Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request body over `max_body` bytes is refused (413) as it streams in, chunked bodies
    (which have no Content-Length) included, before it is spooled to disk or held in memory."""

    def __init__(self, app: Callable, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        over = started = False

        async def guarded_receive() -> dict:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    over = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over:  # whatever the app answers to the cut-off body, ours replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            body = json.dumps({"error": {"code": "too_large",
                                         "message": f"request larger than {self.max_body} bytes"}}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
