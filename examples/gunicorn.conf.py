"""gunicorn settings: several workers on one host sharing one alert window.

From the repository's root, with a Redis server on 127.0.0.1:6379::

    gunicorn -c examples/gunicorn.conf.py

Every worker is a process of its own; without a shared store each would keep
its own de-duplication window and alert once per worker. PERFALERT_STORAGE_URI
names a store they all use (``sqlite:///...`` for one host, ``redis://`` for
several hosts). Settings come from environment variables, as in a container:
a variable already set in the environment wins over the defaults below.
"""

import os

# The app: examples/hello.py. chdir also puts that folder on sys.path.
chdir = os.path.dirname(os.path.abspath(__file__))
wsgi_app = "hello:app"

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
# Sync workers serve one request at a time on their main thread: the cheapest
# case for Flask-PerfAlert (no threads at all until a slow request is reported).
worker_class = "sync"
timeout = 30

# Load the app once in the master, then fork: workers share its memory and
# start faster. Flask-PerfAlert resets its sampler and delivery thread in each
# forked worker, so --preload is safe.
preload_app = True

# Every worker counts against the same window.
os.environ.setdefault("PERFALERT_STORAGE_URI", "redis://127.0.0.1:6379/0")
