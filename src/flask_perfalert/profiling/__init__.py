"""The measuring side: what every request pays, and how slow work gets its profile.

request -> :mod:`.timer` (a WSGI wrapper) -> :mod:`.state` (our record of the
work, never the environ) <- :mod:`.sampler` (a thread of ours, reading stacks
into a :mod:`.measurement`) -> :mod:`.policy` and :mod:`.session` (samples to
a pyinstrument session) -> the app's monitor.
"""
