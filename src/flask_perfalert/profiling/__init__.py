"""The measuring side: request timer, in-flight records, sampler, profiles.

request -> :mod:`.timer` (a WSGI wrapper) -> :mod:`.inflight` (our record of
the work) <- :mod:`.sampler` (a thread of ours, reading stacks into a
:mod:`.measurement`) -> :mod:`.policy` and :mod:`.session` (samples to a
pyinstrument session) -> the app's monitor.
"""
