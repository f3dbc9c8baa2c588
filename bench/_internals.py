"""The few internals of Flask-PerfAlert the benchmark reads, in every revision it compares.

A run may measure this tree and an older revision side by side (``--candidate``),
so a benchmark child may import either. Everything else goes through the
public API (``PerfAlert``, ``perf.stats()``, ``perf_slow_request``); what has no
public API (sizes of the per-process state, waiting for the events thread) is
looked up here by its name in the current layout, then in the older one.
Nothing is imported that the app has not imported already: a bare app never
loads the extension.
"""

from __future__ import annotations

import sys
from typing import Any


def _module(*names: str) -> Any:
    """The first of ``names`` already imported, else None."""
    for name in names:
        module = sys.modules.get(name)
        if module is not None:
            return module
    return None


def settle(timeout: float = 30.0) -> None:
    """Wait until the work the extension does after a response has been done.

    Now: the events thread (events, claims, subscribers). Before: the
    event ran in the response's ``close()``, and only file reports went to a
    worker thread.
    """
    events = _module("flask_perfalert.events_thread", "flask_perfalert.monitor")
    if events is not None:
        events.EVENTS.wait_idle(timeout)
    delivery = _module("flask_perfalert._delivery")
    if delivery is not None and hasattr(delivery, "DELIVERY"):
        delivery.DELIVERY.wait_idle(timeout)


def timer_state(app: Any) -> Any:
    """The state object of the request timer installed on ``app`` (both layouts)."""
    state = getattr(app.wsgi_app, "perfalert_state", None)
    if state is None:
        raise RuntimeError("the app has no Flask-PerfAlert request timer")
    return state


def state_sizes(app: Any) -> dict[str, Any]:
    """Sizes of the extension's per-process state (what could grow with traffic)."""
    ext = app.extensions.get("perfalert")
    if ext is None:
        return {}
    inflight = _module("flask_perfalert.profiling.state", "flask_perfalert.profiling.inflight")
    sampler = _module("flask_perfalert._sampler")
    if inflight is not None:
        in_flight = len(inflight.ACTIVE)
    elif sampler is not None:
        in_flight = len(sampler.SAMPLER.active) + len(sampler.SAMPLER.armed)
    else:
        in_flight = None
    session = _module("flask_perfalert.profiling.session", "flask_perfalert._pyinstrument_compat")
    store = ext._monitors[app].store
    # Stores count their keys with key_states(); older versions had __len__.
    key_states = getattr(store, "key_states", None)
    if key_states is not None:
        store_keys = len(key_states())
    else:
        length = getattr(store, "__len__", None)
        store_keys = length() if length is not None else None
    stats = ext.stats(app)
    return {
        "sampler_active": in_flight,
        "identifier_cache": len(session._identifier_cache) if session is not None else None,
        "store_keys": store_keys,
        "stats": {k: stats[k] for k in ("requests", "slow", "alerted", "suppressed")},
    }
