"""A bounded load test of a running `cifar-cnn serve`: a fixed number of single-image requests
from N concurrent clients over loopback; reports requests/s and p50/p99 latency."""

from __future__ import annotations

import asyncio
import io
import statistics
import time

import numpy as np


def _sample_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


async def _load(url: str, image: bytes, clients: int, requests: int, timeout: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    remaining = iter(range(requests))

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in remaining:  # the shared iterator hands out exactly `requests` requests in all
            t = time.perf_counter()
            try:
                r = await c.post(f"{url}/v1/predict", files={"files": ("x.png", image, "image/png")})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as c:
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "clients": clients,
        "errors": errors,
        "seconds": elapsed,
        "requests_per_second": requests / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


def load_test(url: str = "http://127.0.0.1:8000", clients: int = 32, requests: int = 1000, timeout: float = 30) -> dict:
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError("the load test only targets loopback addresses")
    return asyncio.run(_load(url.rstrip("/"), _sample_png(), clients, requests, timeout))
