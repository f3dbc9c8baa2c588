"""The Mattermost subscriber: each new slow event becomes a post with its report attached.

Off the request path
    The subscriber only queues a job (never blocks: a full queue drops the
    alert with a logged reason). Jobs run on Mattermost's own delivery thread,
    started at the first alert (a gunicorn sync worker that never alerts never
    gets it) and again in a forked child. It is separate from the file
    reports' thread so that a hanging Mattermost never holds up or loses file
    reports. It also serves as the replay timer, so there is no timer thread.

Never lost silently
    The job renders the report and message and writes them to the spool
    *before* the first try; a success removes the entry. Every alert ends as
    delivered, spooled (still in the spool, sent again later), or dropped with
    a logged reason.

Retries
    Connection errors, timeouts, 5xx and 429 are retried up to
    ``MATTERMOST_MAX_RETRIES`` times with exponential back-off and jitter (a
    429's Retry-After is honoured). If all fail, Mattermost is taken to be
    down: later alerts get one try each (a probe that delivers as soon as it is
    back) and otherwise join the spool, which is replayed on a growing interval
    while it is not empty, and after any successful delivery.
    A 4xx other than 429 is not retried: it is logged as the specific problem;
    a settings problem (401, 403, 404) keeps the alert spooled for after the
    fix, a problem of the alert itself (400, 413 on the post) drops it. A
    report the server refuses (413, 501) is left off and the message still
    posted.

No duplicate posts
    Each post carries the event id as ``pending_post_id`` (Mattermost returns
    the post already made for an id it has seen in the last 30 s) and in its
    props. Once a post has been sent whose outcome is unknown (a timeout, a
    5xx), any later try first looks for a post with that id in the channel.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..file import report_name
from .address import ServerAddress, configuration_problems, parse_server_url
from .client import MattermostClient, MattermostError
from .message import format_message, report_note
from .spool import Spool, SpoolEntry
from .worker import WORKER

if TYPE_CHECKING:
    from ...events import SlowRequestEvent
    from ...settings import PerfAlertSettings
    from .. import Counts

logger = logging.getLogger("flask_perfalert")

#: First back-off in seconds; doubled on each retry, with jitter.
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
#: A Retry-After longer than this is not waited for on the thread: the alert
#: is spooled and replayed then.
MAX_INLINE_WAIT = 120.0
#: Replay interval while Mattermost is down: the first, and the longest.
REPLAY_MIN = 30.0
REPLAY_MAX = 600.0
#: Look-ups for a post whose outcome is unknown start this long before it was sent
#: (clocks of the app and of Mattermost may differ).
CLOCK_SKEW = 300.0
#: Time the abandoned jobs of an exiting process may take to be spooled.
EXIT_SPOOL_SECONDS = 2.0
#: The post's props key that holds the event id.
EVENT_PROP = "perfalert_event_id"


class MattermostAlerts:
    """Posts the alerts of one app to one channel; connected to the signal by ``AppMonitor``."""

    def __init__(
        self,
        settings: PerfAlertSettings,
        stats: Counts,
        address: ServerAddress,
        token: str,
        channel_id: str,
        spool_dir: Path,
    ) -> None:
        self.stats = stats
        self.client = MattermostClient(address, token, channel_id, settings.mattermost_timeout)
        self.max_retries = settings.mattermost_max_retries
        self.spool = Spool(spool_dir, on_drop=self._dropped_from_spool)
        #: Until then (monotonic), Mattermost is taken to be down.
        self._down_until = 0.0
        self._replay_delay = REPLAY_MIN
        self._exit_deadline: float | None = None

    @classmethod
    def from_settings(cls, settings: PerfAlertSettings, stats: Counts) -> MattermostAlerts | None:
        """The subscriber, or None after a warning saying what is missing."""
        problems = configuration_problems(settings)
        if problems:
            logger.warning(
                "PERFALERT_MATTERMOST_ENABLED is on but %s: Mattermost alerts are off "
                "(the app runs; `flask perfalert check` tests the settings).",
                "; ".join(problems),
            )
            return None
        assert settings.mattermost_url and settings.mattermost_token
        assert settings.mattermost_channel_id
        address, note = parse_server_url(settings.mattermost_url)
        if note:
            logger.info(
                "PERFALERT_MATTERMOST_URL: %s; posting to the server at %s.", note, address.display
            )
        spool_dir = settings.spool_dir or Path(settings.file_dir) / "spool"
        try:
            alerts = cls(
                settings,
                stats,
                address,
                settings.mattermost_token.get_secret_value(),
                settings.mattermost_channel_id.strip(),
                spool_dir,
            )
        except Exception:
            logger.exception("Mattermost alerts could not be set up; they are off")
            return None
        waiting = len(alerts.spool.names())
        if waiting:
            logger.info(
                "%d Mattermost alert(s) wait in %s; they are sent after the next delivery, "
                "or by `flask perfalert check`.",
                waiting,
                alerts.spool.folder,
            )
        return alerts

    # -- the request thread -------------------------------------------------------------
    def on_slow_request(self, sender: object, event: SlowRequestEvent, **extra: object) -> None:
        if event.duplicate:
            return
        WORKER.submit(_AlertJob(self, event))

    # -- the delivery thread ------------------------------------------------------------
    def entry_data(self, event: SlowRequestEvent, *, test: bool = False) -> dict[str, Any]:
        """What the spool keeps of an alert: the post's text and the report."""
        return {
            "version": 1,
            "event_id": event.id,
            "created": time.time(),
            "server": self.client.address.display,
            "channel_id": self.client.channel_id,
            "summary": event.summary(),
            "message": format_message(event, test=test),
            "report_name": report_name(event),
            "report_html": event.html,
            "post_sent_at": None,
        }

    def deliver_new(self, event: SlowRequestEvent) -> None:
        """Spool, then send with retries (the job of one new alert)."""
        data = self.entry_data(event)
        try:
            entry = self.spool.add(data)
        except OSError as exc:
            logger.warning(
                "Could not write the Mattermost alert for %s to the spool %s (%s); sending "
                "it without a copy on disk.",
                data["summary"],
                self.spool.folder,
                exc,
            )
            entry = SpoolEntry(None, data, None)
        # While Mattermost is known to be down, a new alert is one probe (no
        # retries): it costs at most one timeout, and delivers the moment
        # Mattermost is back (the spool follows). At exit, one try each too.
        down = time.monotonic() < self._down_until
        self._send_with_retries(entry, 0 if down or WORKER.closing else self.max_retries)

    def _send_with_retries(self, entry: SpoolEntry, max_retries: int) -> None:
        retry = 0
        while True:
            try:
                self._send(entry)
            except MattermostError as exc:
                if exc.kind != "transient":
                    self._refused(entry, exc)
                    return
                delay = _backoff(retry, exc.retry_after)
                if retry >= max_retries or delay > MAX_INLINE_WAIT or WORKER.closing:
                    self.stats.add("delivery_failures")
                    self._unavailable(exc, delay if exc.retry_after else None)
                    self._keep(entry, f"{exc} (after {retry + 1} tries)")
                    return
                retry += 1
                logger.info(
                    "Mattermost alert for %s: %s; try %d of %d in %.1f s.",
                    entry.data["summary"],
                    exc,
                    retry + 1,
                    max_retries + 1,
                    delay,
                )
                if not WORKER.sleep(delay):
                    self._keep(entry, "the process is exiting")
                    return
            else:
                self._delivered(entry)
                self.replay()
                return

    def _send(self, entry: SpoolEntry) -> dict[str, Any]:
        """One try: find the post if it may exist, else upload the report and post."""
        data = entry.data
        client = self.client
        event_id = str(data["event_id"])
        sent_at = data.get("post_sent_at")
        if sent_at:
            found = client.find_post(EVENT_PROP, event_id, float(sent_at) - CLOCK_SKEW)
            if found is not None:
                return found
        message = str(data["message"])
        file_ids: list[str] = []
        html = data.get("report_html")
        if html is None:
            entry.report_problem = "it could not be made (see the app's log)"
        elif entry.file_id is None and entry.report_problem is None:
            try:
                entry.file_id = client.upload(str(data["report_name"]), html.encode("utf-8"))
            except MattermostError as exc:
                if exc.kind != "entry":
                    raise
                logger.warning(
                    "Mattermost alert for %s: %s; posting it without the report.",
                    data["summary"],
                    exc,
                )
                entry.report_problem = str(exc)
        if entry.report_problem is not None:
            message += report_note(entry.report_problem)
        if entry.file_id is not None:
            file_ids = [entry.file_id]
        if not sent_at:
            self._note_sent(entry)
        post = client.create_post(message, file_ids, event_id, {EVENT_PROP: event_id})
        if file_ids and file_ids[0] not in (post.get("file_ids") or []):
            logger.warning(
                "Mattermost posted the alert for %s without its report (the server did not "
                "attach file %s).",
                data["summary"],
                file_ids[0],
            )
        return post

    def _note_sent(self, entry: SpoolEntry) -> None:
        # Written before the post goes out: whoever tries again later (this
        # process or another) knows to look for the post first.
        try:
            self.spool.update(entry, post_sent_at=time.time())
        except OSError:
            entry.data["post_sent_at"] = time.time()

    # -- outcomes -----------------------------------------------------------------------
    def _delivered(self, entry: SpoolEntry, replayed: bool = False) -> None:
        self.spool.remove(entry)
        self.stats.add("delivered")
        self._down_until = 0.0
        self._replay_delay = REPLAY_MIN
        logger.info(
            "Posted to Mattermost%s: %s",
            " from the spool" if replayed else "",
            entry.data["summary"],
        )

    def _keep(self, entry: SpoolEntry, reason: str) -> None:
        """The alert stays in the spool, or is dropped if it never got there."""
        summary = entry.data["summary"]
        if not entry.on_disk:
            self.stats.add("dropped")
            logger.warning("Mattermost alert for %s dropped: %s.", summary, reason)
            return
        self.spool.release(entry)
        self.stats.add("spooled")
        self._schedule_replay()
        logger.warning(
            "Mattermost alert for %s kept in the spool %s: %s; it is sent again later.",
            summary,
            self.spool.folder,
            reason,
        )

    def _refused(self, entry: SpoolEntry, exc: MattermostError) -> None:
        """A 4xx: nothing to gain by trying again now."""
        self.stats.add("delivery_failures")
        if exc.kind == "config":
            logger.error("Mattermost alert not delivered: %s.", exc)
            self._unavailable(exc, REPLAY_MAX)
            self._keep(entry, str(exc))
            return
        self.spool.remove(entry)
        self.stats.add("dropped")
        logger.error("Mattermost alert for %s dropped: %s.", entry.data["summary"], exc)

    def _unavailable(self, exc: MattermostError, delay: float | None) -> None:
        """Mattermost cannot take alerts now: the next ones go straight to the spool."""
        wait = delay if delay is not None else self._replay_delay
        self._down_until = time.monotonic() + wait
        self._replay_delay = min(REPLAY_MAX, self._replay_delay * 2)

    def _schedule_replay(self) -> None:
        delay = max(0.0, self._down_until - time.monotonic()) or self._replay_delay
        WORKER.schedule(self, delay * random.uniform(1.0, 1.2))

    def _dropped_from_spool(self, data: dict[str, Any], reason: str) -> None:
        self.stats.add("dropped")
        logger.warning("Mattermost alert for %s dropped: %s.", data.get("summary"), reason)

    # -- replay ---------------------------------------------------------------------
    def _owns(self, data: dict[str, Any]) -> bool:
        return (
            data.get("server") == self.client.address.display
            and data.get("channel_id") == self.client.channel_id
        )

    def replay(self) -> tuple[int, int]:
        """Send what waits in the spool, one try each; stop at the first transient failure.

        Returns how many were delivered and how many are left.
        """
        delivered = 0
        for entry in self.spool.claim(self._owns):
            try:
                self._send(entry)
            except MattermostError as exc:
                if exc.kind == "entry":
                    self._refused(entry, exc)
                    continue
                self.spool.release(entry)
                self.stats.add("delivery_failures")
                self._unavailable(exc, REPLAY_MAX if exc.kind == "config" else exc.retry_after)
                self._schedule_replay()
                log = logger.error if exc.kind == "config" else logger.warning
                log(
                    "Mattermost alerts wait in the spool %s: %s.",
                    self.spool.folder,
                    exc,
                )
                break
            else:
                self._delivered(entry, replayed=True)
                delivered += 1
        return delivered, self.spool.count()

    def close(self) -> None:
        """Stop replaying: the app's monitoring was closed or set up again (``init_app``).

        What waits in the spool stays there for the next process (or the new set-up).
        """
        WORKER.forget(self)

    # -- the CLI ----------------------------------------------------------------------
    def send_test(self, event: SlowRequestEvent) -> dict[str, Any]:
        """Send a test alert now, once, without the spool; raises MattermostError."""
        entry = SpoolEntry(None, self.entry_data(event, test=True), None)
        entry.data["summary"] = "the test alert"
        return self._send(entry)

    # -- exit --------------------------------------------------------------------------
    def abandon(self, event: SlowRequestEvent, reason: str) -> None:
        """A queued alert will not run: spool it if the process is exiting, else drop it."""
        summary = event.summary()
        if not WORKER.closing:
            # The queue is full: do not render on the request thread.
            self.stats.add("dropped")
            logger.warning("Mattermost alert for %s dropped: %s.", summary, reason)
            return
        now = time.monotonic()
        if self._exit_deadline is None:
            self._exit_deadline = now + EXIT_SPOOL_SECONDS
        if now > self._exit_deadline:
            self.stats.add("dropped")
            logger.warning(
                "Mattermost alert for %s dropped: %s, and no time was left to spool it.",
                summary,
                reason,
            )
            return
        try:
            entry = self.spool.add(self.entry_data(event))
        except OSError as exc:
            self.stats.add("dropped")
            logger.warning("Mattermost alert for %s dropped: %s (spool: %s).", summary, reason, exc)
            return
        self._keep(entry, reason)


def _backoff(retry: int, retry_after: float | None) -> float:
    """Seconds before retry number ``retry + 1``: exponential, with jitter."""
    if retry_after is not None:
        return retry_after + random.uniform(0.0, min(1.0, BACKOFF_BASE))
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2.0**retry)
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)


class _AlertJob:
    def __init__(self, alerts: MattermostAlerts, event: SlowRequestEvent) -> None:
        self.alerts = alerts
        self.event = event
        self.description = f"Mattermost alert for {event.key}"

    def run(self) -> None:
        self.alerts.deliver_new(self.event)

    def abandon(self, reason: str) -> None:
        self.alerts.abandon(self.event, reason)
