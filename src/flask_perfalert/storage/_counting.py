"""What the shared stores agree on for counters (see ``flask_perfalert._counters``).

Each process adds its counts to the store in *batches*: the counts since its
previous batch, numbered ``1, 2, 3, ...`` by a random sender id made per
process. The store applies a batch only if its number is higher than the last
one it applied for that sender, so a batch sent again after an error whose
outcome is unknown (the reply lost in a timeout) is counted once.
"""

from __future__ import annotations

#: (sender id, batch number), or None for counts sent without a batch.
Batch = tuple[str, int]

#: Seconds the counters of an app outlive the last batch added to them (Redis).
COUNTER_TTL = 30 * 86400
#: Seconds a sender's last batch number is remembered after its last batch.
SENDER_TTL = 86400
#: A sender that added a batch in this many seconds counts in ``workers_seen``.
WORKERS_RECENT = 600.0
#: Names in ``counters()`` that are not summed counts.
SINCE = "since"
WORKERS_SEEN = "workers_seen"
