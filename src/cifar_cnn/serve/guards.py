"""Guards for a server that may face other machines: each one a small ASGI middleware.

Outermost first, as `create_app` stacks them:
  SecurityHeaders  nosniff, no framing, no referrer, a Content-Security-Policy on every response
  CORS             only for the origins the operator lists (none by default)
  RateLimit        a token bucket per client address: 429 + Retry-After when it runs dry
  ApiKey           `Authorization: Bearer KEY`, compared in constant time; health checks stay open
  BodyLimit        caps the request body as it streams in, chunked or not: 413 before it is all read
Slow clients (headers or a body a few bytes at a time) are cut off below ASGI, in `timeouts.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Paths a load balancer or orchestrator polls, open even with an API key and never rate limited.
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
# The page, its assets and the API docs hold no data; the page asks for the key when the API needs one.
# The studio's page (/studio) is public too; its API (/studio/api/...) writes files and needs the key.
PUBLIC_PATHS = frozenset({"/", "/studio", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/", "/static-offline-docs/")

# The page and its scripts come from this server only; images shown are the user's own (blob:) or data: URLs.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")  # fmt: skip
# Swagger UI's page boots from one inline script (FastAPI's template) and inline styles.
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def is_open(path: str) -> bool:
    return path in HEALTH_PATHS or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer with the API's error shape without involving the app (no body read, nothing else runs)."""
    response = JSONResponse({"error": message, "filename": None}, status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never reads the request
    return {"type": "http.disconnect"}


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = DOCS_CSP if scope["path"].startswith("/docs") else PAGE_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                headers += [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer"), (b"content-security-policy", csp.encode()),
                            (b"cross-origin-opener-policy", b"same-origin")]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimit:
    """`per_second` requests per client address on average, bursts up to `burst`, then 429 + Retry-After.

    Buckets live in a bounded LRU, so many distinct clients cannot grow memory without limit."""

    def __init__(self, app: ASGIApp, per_second: float, burst: int | None = None, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.app, self.rate, self.clock, self.max_clients = app, per_second, clock, max_clients
        self.burst = float(burst if burst is not None else max(1, math.ceil(2 * per_second)))
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, last seen)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        wait = self.take(scope["client"][0] if scope.get("client") else "unknown")
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            return await send_error(send, 429, f"too many requests: try again in {retry} s", {"Retry-After": retry})
        await self.app(scope, receive, send)

    def take(self, client: str) -> float:
        """Spend one token of `client`'s bucket; returns 0, or the seconds until a token is there."""
        now = self.clock()
        tokens, last = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)  # forget the client seen longest ago
        return wait


class ApiKey:
    """Every path but health checks, the page and the docs needs `Authorization: Bearer KEY`."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.digest = hashlib.sha256(key.encode()).digest()

    def allows(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        # Compare fixed-length digests in constant time: neither the key nor its length leaks through timing.
        given = hashlib.sha256(token.strip().encode()).digest()
        return hmac.compare_digest(given, self.digest) and scheme.lower() == "bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]) or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        authorization = _header(scope, b"authorization")
        if not self.allows(authorization):
            message = "this server needs an API key: send the header 'Authorization: Bearer <key>'"
            if authorization:
                message = "the API key is not valid"
            return await send_error(send, 401, message, {"WWW-Authenticate": "Bearer"})
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over `max_bytes`, whether announced by Content-Length or sent chunked.

    The count happens as the body streams in, so an over-long chunked upload is stopped at the cap
    instead of being read (and spooled to disk) to its end. The 413 closes the connection."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"request body over the {_mib(self.max_bytes)} limit"
        length = _header(scope, b"content-length")
        if length and (not length.isdigit() or int(length) > self.max_bytes):
            return await send_error(send, 413, too_large, {"Connection": "close"})
        received, tripped, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, tripped
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    tripped = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if tripped:  # the app's own answer to the interrupted body (FastAPI: 400) is replaced by the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # raised in counting_receive, inside the app
            await self.app(scope, counting_receive, guarded_send)
        if tripped and not started:
            await send_error(send, 413, too_large, {"Connection": "close"})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def cors_middleware_options(origins: Iterable[str]) -> dict:
    """Options for Starlette's CORSMiddleware: the listed origins only, the API's methods and headers."""
    return {"allow_origins": list(origins), "allow_methods": ["GET", "POST"], "allow_credentials": False,
            "allow_headers": ["Authorization", "Content-Type", "Inference-Header-Content-Length"],
            "max_age": 600}  # fmt: skip
