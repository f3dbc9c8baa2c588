"""Extension objects, created without an app; ``create_app`` binds them."""

from __future__ import annotations

from flask_perfalert import PerfAlert

#: One instance for the whole code base: ``@perf.watch`` works on module import,
#: before any app exists.
perf = PerfAlert()
