"""An app factory with blueprints.

Run it from the repository's root::

    flask --app examples/factory/shop run

then open http://127.0.0.1:5000/catalog/search?q=lamp (slow) and
http://127.0.0.1:5000/health (never monitored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from .extensions import perf

#: Defaults of this app; in production they usually come from PERFALERT_*
#: environment variables instead (app.config beats the environment).
DEFAULTS: dict[str, Any] = {
    "PERFALERT_THRESHOLD_SECONDS": 0.5,
    # Search is allowed less time than the rest of the app.
    "PERFALERT_ENDPOINT_THRESHOLDS": {"catalog.search": 0.2},
    # Health checks and static files are never monitored.
    "PERFALERT_EXCLUDE": ["static", "/health*"],
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    if config:
        app.config.update(config)

    perf.init_app(app)

    from .catalog import bp as catalog_bp
    from .health import bp as health_bp

    app.register_blueprint(catalog_bp)
    app.register_blueprint(health_bp)
    return app
