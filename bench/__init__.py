"""The Flask-PerfAlert benchmark (``python bench/run.py``); see docs/performance.rst."""
