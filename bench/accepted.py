"""The request_id of an accepted POST, or the error: an error envelope carries a
request_id too, so a bench that read it without the status went on measuring a
request that never existed (`bench/dialer.py setups` once sat 60 s on a 422)."""

from __future__ import annotations

import httpx


def accepted(response: httpx.Response) -> str:
    if response.status_code != 200:
        raise RuntimeError(f"POST refused: {response.status_code} {response.text[:500]}")
    return str(response.json()["request_id"])
