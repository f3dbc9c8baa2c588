"""The built-in alert subscribers of :data:`~flask_perfalert.perf_slow_request`."""
