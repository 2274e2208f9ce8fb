"""Estimated cost of a hosted LLM call: a small price table, zero for local models.

Prices are USD per million tokens (input, output), list prices as published by the providers in
2025; they change, so treat the totals as estimates. Model names match by longest prefix, so a
dated snapshot (`gpt-4o-2024-08-06`) gets its family's price and `gpt-4o-mini` is not priced as
`gpt-4o`.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

# (input, output) USD per 1M tokens.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o4-mini": (1.10, 4.40),
    "deepseek-chat": (0.28, 0.42),
    "deepseek-reasoner": (0.28, 0.42),
}


def lookup_price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for `model`, or None if it is not in the table."""
    name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" style names from routers
    best = max((key for key in PRICES_PER_MTOK if name.startswith(key)), key=len, default=None)
    return PRICES_PER_MTOK[best] if best is not None else None


def is_local_url(base_url: str | None) -> bool:
    """True for an endpoint on this machine or a private network (self-hosted: no token bill)."""
    if not base_url:
        return False
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


class CostModel:
    """Turns token counts into dollars for one client.

    `per_call` returns None when the price is unknown (a hosted model not in the table); the
    client then reports `cost_known=False` and logs one warning instead of inventing a number.
    """

    def __init__(self, model: str, *, local: bool) -> None:
        self.local = local
        self.price = None if local else lookup_price(model)
        self.known = local or self.price is not None
        if not self.known:
            logger.warning(
                "no price known for hosted model %r; its cost is reported as unknown", model
            )

    def per_call(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.local:
            return 0.0
        if self.price is None:
            return None
        price_in, price_out = self.price
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6
