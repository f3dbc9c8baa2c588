"""The catalog blueprint: a fast listing and a slow search."""

from __future__ import annotations

import time

from flask import Blueprint, request

from .extensions import perf

bp = Blueprint("catalog", __name__, url_prefix="/catalog")

PRODUCTS = [f"{colour} {thing}" for colour in ("red", "blue") for thing in ("lamp", "chair")]


@perf.watch(threshold=0.1)
def rank_products(query: str) -> list[str]:
    """Watched on its own: an alert names it even when it runs outside a request."""
    time.sleep(0.15)  # stands for a slow ranking service
    return sorted(p for p in PRODUCTS if query in p)


@bp.get("/")
def listing() -> dict[str, list[str]]:
    return {"products": PRODUCTS}


@bp.get("/search")
def search() -> dict[str, list[str]]:
    query = request.args.get("q", "")
    time.sleep(0.1)  # stands for a slow query
    return {"results": rank_products(query)}
