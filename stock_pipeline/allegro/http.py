"""What every Allegro HTTP call shares: headers, error bodies, the retry policy."""

from __future__ import annotations

import datetime
import email.utils
import time
from typing import Any

import httpx
import orjson

from stock_pipeline import USER_AGENT

MEDIA_TYPE = "application/vnd.allegro.public.v1+json"
# Allegro documents no Retry-After on 429s; a breach blocks the client for about a minute.
DEFAULT_RATE_LIMIT_BACKOFF = 60.0
MAX_BACKOFF = 300.0


def api_headers() -> dict[str, str]:
    return {"Accept": MEDIA_TYPE, "User-Agent": USER_AGENT}


def json_body(response: httpx.Response) -> Any:
    """The answer's JSON body, decoded by orjson: a 1 000-offer listing page is ~450 KB and
    the stdlib decoder made it the listing's largest client-side cost. A body that is not
    JSON raises ValueError (orjson.JSONDecodeError is json.JSONDecodeError), as
    Response.json() did."""
    return orjson.loads(response.content)


def error_detail(response: httpx.Response) -> str:
    """A short human message from Allegro's error bodies (REST or OAuth shape)."""
    try:
        body = json_body(response)
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"]:
            parts = []
            for err in body["errors"][:5]:
                if isinstance(err, dict):
                    parts.append(": ".join(str(err[k]) for k in ("code", "message") if err.get(k)))
            return "; ".join(p for p in parts if p) or str(body)[:300]
        if "error" in body:
            return f"{body.get('error')}: {body.get('error_description', '')}".strip(": ")
    return str(body)[:300]


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta or HTTP date), or None when absent/unusable."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):  # a malformed header is ignored, not fatal
        return None
    if parsed.tzinfo is None:  # HTTP dates are GMT
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, parsed.timestamp() - time.time())


def backoff_seconds(attempt: int, base_delay: float, retry_after: float | None) -> float:
    """Exponential backoff from ALLEGRO_SYNC_RETRY_DELAY; a server's Retry-After wins when longer."""
    exponential = min(MAX_BACKOFF, base_delay * (2 ** max(0, attempt - 1)))
    return max(exponential, retry_after or 0.0)
