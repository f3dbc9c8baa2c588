"""The Mattermost subscriber: each new slow event becomes a post with its report attached.

* On the thread that sends the signal (after the response, never in a
  request) the alert is rendered and written to the spool at once, so even a
  ``SIGKILL`` a moment later loses nothing; Mattermost's own thread sends it.
  No network call is made on the signal's thread.
* What each answer does is one table, :data:`.policy.POLICY`: connection
  errors, timeouts, 408, 425, 429 (its Retry-After honoured up to
  ``MAX_RETRY_AFTER``) and 5xx are retried with exponential back-off and
  jitter, then Mattermost is taken to be down and later alerts get one try
  each; a settings problem (401, 403, 404) and any answer the table does not
  know keep the alert for after the fix; a 413 sends less (the post without
  the report, or a shorter message); only a 400 saying the message itself is
  invalid drops it.
* Replay: alerts waiting in the spool are sent at start-up, on a timer with
  back-off while any wait, and after every delivery; an entry that keeps
  failing waits longer on its own and never holds up the others. An
  unexpected error is logged and the alert tried again.
* No duplicate posts: the event id goes as ``pending_post_id`` and in the
  post's props; after a try whose outcome is unknown, the next one looks for
  the post first (and posts again, with a warning, if the bot may not read
  the channel: at least once beats never).

docs/mattermost.rst tells the whole story, with the test behind each promise.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._logging import LimitedWarning, logger
from .address import ServerAddress, configuration_problems, parse_server_url
from .client import MAX_RETRY_AFTER, MattermostClient, MattermostError
from .message import (
    SHORTER_MESSAGE_CHARS,
    report_note,
    shorter_message,
    spool_entry,
    where_the_report_is,
)
from .policy import (
    LOG_DROP,
    LOG_KEEP,
    LOG_REPLAY_STOPS,
    LOG_RETRIES_OVER,
    LOG_RETRY,
    LOG_SHORTER,
    LOG_WITHOUT_REPORT,
    SHORTEST_REFUSED,
    Action,
)
from .spool import Spool, SpoolEntry, SpoolUnavailable
from .worker import WORKER, SendJob

if TYPE_CHECKING:
    from ...events import SlowRequestEvent
    from ...settings import PerfAlertSettings
    from .. import Counts

#: First back-off in seconds; doubled on each retry, with jitter.
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
#: A Retry-After longer than this is not waited for inline: the alert waits in the spool.
MAX_INLINE_WAIT = 120.0
#: Replay interval while alerts wait: the first, and the longest.
REPLAY_MIN = 30.0
REPLAY_MAX = 600.0
#: Seconds after start-up before alerts found waiting are sent.
REPLAY_AT_START = 2.0
#: After this many entries failed in a row (5xx), one replay stops: Mattermost is unwell.
REPLAY_FAILURES_IN_A_ROW = 3
#: Look-ups for a post whose outcome is unknown start this long before it was sent
#: (clocks of the app and of Mattermost may differ).
CLOCK_SKEW = 300.0
#: The post's props key that holds the event id.
EVENT_PROP = "perfalert_event_id"


class MattermostAlerts:
    """Posts the alerts of one app to one channel; connected to the signal by ``AppMonitor``."""

    def __init__(
        self,
        settings: PerfAlertSettings,
        stats: Counts,
        app_key: str,
        address: ServerAddress,
        token: str,
        channel_id: str,
        spool_dir: Path,
    ) -> None:
        self.stats = stats
        #: Names the app in its spool entries: every process of the app sends them.
        self.app_key = app_key
        self.client = MattermostClient(address, token, channel_id, settings.mattermost_timeout)
        self.max_retries = settings.mattermost_max_retries
        self.spool = Spool(spool_dir, on_drop=self._dropped)
        #: Where the file subscriber writes reports: the full report of an alert
        #: Mattermost cannot take whole is read there.
        self.report_folder = Path(settings.file_dir).absolute() if settings.file_enabled else None
        #: Until then (monotonic), Mattermost is taken to be down.
        self._down_until = 0.0
        self._replay_delay = REPLAY_MIN
        #: Entries that failed on their own: event id -> (failures, not before (monotonic)).
        self._entry_waits: dict[str, tuple[int, float]] = {}
        self._spool_warning = LimitedWarning()
        self._lookup_warning = LimitedWarning()

    @classmethod
    def from_settings(
        cls, settings: PerfAlertSettings, stats: Counts, app_key: str
    ) -> MattermostAlerts | None:
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
                app_key,
                address,
                settings.mattermost_token.get_secret_value(),
                settings.mattermost_channel_id.strip(),
                spool_dir,
            )
        except Exception:
            logger.exception("Mattermost alerts could not be set up; they are off")
            return None
        waiting = alerts.spool.count(alerts._owns)
        if waiting:
            logger.info(
                "%d Mattermost alert(s) of this app wait in %s; they are sent in a moment.",
                waiting,
                alerts.spool.folder,
            )
            WORKER.schedule(alerts, REPLAY_AT_START * random.uniform(1.0, 1.5))
        return alerts

    # -- the thread that sends the signal ------------------------------------------------
    def prepare(self) -> None:
        """Start the delivery thread while threads can still start (a slow request
        has been handed on; its post may be made as the process exits)."""
        WORKER.start()

    def on_slow_request(self, sender: object, event: SlowRequestEvent, **extra: object) -> None:
        """Render and spool the alert now; Mattermost's thread sends it."""
        if event.duplicate:
            return
        data = spool_entry(event, self.app_key, report_folder=self.report_folder)
        try:
            entry = self.spool.add(data)
        except SpoolUnavailable:  # logged once by the spool
            entry = SpoolEntry(None, data, None)
        except OSError as exc:
            self._spool_warning.warn(
                "Could not write the Mattermost alert for %s to the spool %s (%s); it is sent "
                "without a copy on disk",
                data["summary"],
                self.spool.folder,
                exc,
            )
            entry = SpoolEntry(None, data, None)
        WORKER.submit(SendJob(self, entry))

    # -- the delivery thread -------------------------------------------------------------
    def deliver(self, entry: SpoolEntry) -> None:
        """Send a new alert, with retries (one try while Mattermost is down, or at exit)."""
        down = time.monotonic() < self._down_until
        retries = 0 if down or WORKER.closing else self.max_retries
        retry = 0
        while True:
            try:
                self._send(entry)
            except MattermostError as exc:
                if exc.action is not Action.RETRY:
                    self._refused(entry, exc)
                    return
                delay = _backoff(retry, exc.retry_after)
                if retry >= retries or delay > MAX_INLINE_WAIT or WORKER.closing:
                    self.stats.add("delivery_failures")
                    self._unavailable(delay if exc.retry_after is not None else None)
                    self.keep(entry, str(exc), tries=retry + 1)
                    return
                retry += 1
                logger.info(
                    "%s",
                    LOG_RETRY.format(
                        summary=entry.data["summary"],
                        reason=exc,
                        n=retry + 1,
                        tries=retries + 1,
                        delay=f"{delay:.1f}",
                    ),
                )
                if not WORKER.sleep(delay):
                    self.keep(entry, "the process is exiting")
                    return
            else:
                self._delivered(entry)
                self.replay()
                return

    def replay(self) -> tuple[int, int]:
        """Send what of this app waits in the spool, one try each.

        An entry that fails on its own (a 5xx) waits longer and the others go on;
        the replay stops when Mattermost cannot be reached, refuses the settings
        or asks to slow down; only a message refused for good is dropped. Returns
        how many were delivered and how many are left.
        """
        delivered = failed_in_a_row = 0
        now = time.monotonic()
        for entry in self.spool.claim(self._owns):
            waits = self._entry_waits.get(entry.data["event_id"])
            if waits is not None and waits[1] > now:
                self.spool.release(entry)
                continue
            try:
                self._send(entry)
            except MattermostError as exc:
                if exc.action is Action.DROP:
                    self._refused(entry, exc)
                    continue
                self.spool.release(entry)
                self.stats.add("delivery_failures")
                failed_in_a_row += 1
                if _about_the_entry(exc):
                    self._entry_failed(entry)
                    if failed_in_a_row < REPLAY_FAILURES_IN_A_ROW:
                        continue
                settings = exc.rule.setting is not None
                self._unavailable(REPLAY_MAX if settings else exc.retry_after)
                level = logging.ERROR if exc.action is Action.KEEP else LOG_REPLAY_STOPS.level
                logger.log(
                    level, "%s", LOG_REPLAY_STOPS.format(spool=self.spool.folder, reason=exc)
                )
                break
            else:
                self._delivered(entry, replayed=True)
                delivered += 1
                failed_in_a_row = 0
        left = self.spool.count(self._owns)
        if left:
            self._schedule_replay()
        return delivered, left

    def _send(self, entry: SpoolEntry) -> dict[str, Any]:
        """One try: find the post if it may exist, else upload the report and post."""
        data = entry.data
        client = self.client
        event_id = str(data["event_id"])
        sent_at = data.get("post_sent_at")
        found = self._find(entry, float(sent_at)) if sent_at else None
        if found is not None:
            return found
        message = str(data["message"])
        report_path = data.get("report_path")
        html = data.get("report_html")
        if html is None:
            entry.report_problem = "it could not be made (see the app's log)"
        elif entry.file_id is None and entry.report_problem is None:
            try:
                entry.file_id = client.upload(str(data["report_name"]), html.encode("utf-8"))
            except MattermostError as exc:
                if exc.action is not Action.SMALLER:
                    raise
                logger.warning(
                    "%s",
                    LOG_WITHOUT_REPORT.format(
                        summary=data["summary"],
                        reason=exc,
                        report=where_the_report_is(report_path),
                    ),
                )
                entry.report_problem = str(exc)
        if entry.report_problem is not None:
            message += report_note(entry.report_problem, report_path)
        file_ids = [entry.file_id] if entry.file_id is not None else []
        if not sent_at:
            # Written before the post goes out: whoever tries again later (this
            # process or another) knows to look for the post first.
            try:
                self.spool.update(entry, post_sent_at=time.time())
            except OSError:
                entry.data["post_sent_at"] = time.time()
        text = message
        for step in range(len(SHORTER_MESSAGE_CHARS) + 1):
            try:
                post = client.create_post(text, file_ids, event_id, {EVENT_PROP: event_id})
                break
            except MattermostError as exc:
                if exc.action is not Action.SMALLER:
                    raise
                if step == len(SHORTER_MESSAGE_CHARS):
                    raise MattermostError(
                        f"{exc}, even cut to its heading; raise the body size limit of the "
                        "server or of the proxy in front of it (nginx: client_max_body_size)",
                        SHORTEST_REFUSED,
                        exc.status,
                    ) from None
                logger.warning(
                    "%s",
                    LOG_SHORTER.format(
                        summary=data["summary"],
                        reason=exc,
                        report=where_the_report_is(report_path),
                    ),
                )
                text = shorter_message(message, step, str(exc), report_path)
        if file_ids and file_ids[0] not in (post.get("file_ids") or []):
            logger.warning(
                "Mattermost posted the alert for %s without its report (the server did not "
                "attach file %s).",
                data["summary"],
                file_ids[0],
            )
        return post

    def _find(self, entry: SpoolEntry, sent_at: float) -> dict[str, Any] | None:
        """The post an earlier try may have made; None if there is none, or no way to tell."""
        event_id = str(entry.data["event_id"])
        try:
            return self.client.find_post(EVENT_PROP, event_id, sent_at - CLOCK_SKEW)
        except MattermostError as exc:
            if exc.action is Action.RETRY:
                raise
            self._lookup_warning.warn(
                "Mattermost alert for %s: an earlier try may have been posted, but %s; it is "
                "posted again (it may show twice; give the bot the read_channel permission)",
                entry.data["summary"],
                exc,
            )
            return None

    # -- outcomes -------------------------------------------------------------------------
    def _delivered(self, entry: SpoolEntry, replayed: bool = False) -> None:
        self.spool.remove(entry)
        self._entry_waits.pop(entry.data["event_id"], None)
        self.stats.add("delivered")
        self._down_until = 0.0
        self._replay_delay = REPLAY_MIN
        logger.info(
            "Posted to Mattermost%s: %s",
            " from the spool" if replayed else "",
            entry.data["summary"],
        )

    def keep(
        self, entry: SpoolEntry, reason: str, level: int = logging.WARNING, tries: int = 0
    ) -> None:
        """The alert stays in the spool, or is dropped if it never got there.

        ``tries``: how many tries a retryable answer got before it waits (the
        policy's retries-over line); else the policy's KEEP line, at ``level``.
        """
        if not entry.on_disk:
            self._dropped(entry.data, f"{reason} (after {tries} tries)" if tries else reason, level)
            return
        self.spool.release(entry)
        self.stats.add("spooled")
        self._schedule_replay()
        line = LOG_RETRIES_OVER if tries else LOG_KEEP
        fields = {"summary": entry.data["summary"], "spool": self.spool.folder, "tries": tries}
        logger.log(level, "%s", line.format(reason=reason, **fields))

    def _refused(self, entry: SpoolEntry, exc: MattermostError) -> None:
        """Nothing to gain by trying again now: keep the alert for later, or drop it."""
        self.stats.add("delivery_failures")
        if exc.action is not Action.DROP:  # the policy's KEEP, or an answer it does not know
            if _about_the_entry(exc):
                self._entry_failed(entry)
                self._unavailable(None)
            else:
                self._unavailable(REPLAY_MAX)
            self.keep(entry, str(exc), level=logging.ERROR)
            return
        self.spool.remove(entry)
        self._dropped(entry.data, str(exc), level=logging.ERROR)

    def _dropped(self, data: dict[str, Any], reason: str, level: int = logging.WARNING) -> None:
        self.stats.add("dropped")
        logger.log(level, "%s", LOG_DROP.format(summary=data.get("summary"), reason=reason))

    def crashed(self, entry: SpoolEntry) -> None:
        """An unexpected error on the delivery thread: log it, keep the alert, try it later."""
        logger.exception(
            "Flask-PerfAlert failed unexpectedly sending the Mattermost alert for %s",
            entry.data["summary"],
        )
        if entry.fd is None:  # already delivered, dropped or released
            self._schedule_replay()
            return
        self._entry_failed(entry)
        self.keep(entry, "an unexpected error (logged above)")

    def _entry_failed(self, entry: SpoolEntry) -> None:
        event_id = entry.data["event_id"]
        failures = self._entry_waits.get(event_id, (0, 0.0))[0] + 1
        wait = min(REPLAY_MAX, REPLAY_MIN * 2 ** (failures - 1))
        self._entry_waits[event_id] = (failures, time.monotonic() + wait)

    def _unavailable(self, delay: float | None) -> None:
        """Mattermost cannot take alerts now: the next ones go straight to the spool."""
        wait = min(delay, MAX_RETRY_AFTER) if delay is not None else self._replay_delay
        self._down_until = time.monotonic() + wait
        self._replay_delay = min(REPLAY_MAX, self._replay_delay * 2)

    def _schedule_replay(self) -> None:
        delay = max(0.0, self._down_until - time.monotonic()) or self._replay_delay
        WORKER.schedule(self, delay * random.uniform(1.0, 1.2))

    def _owns(self, data: dict[str, Any]) -> bool:
        # The app, not the server or channel: alerts kept while a setting was
        # wrong go wherever the settings point once they are fixed.
        return data.get("app") == self.app_key

    # -- the CLI and the app's life ---------------------------------------------------------
    def backlog(self) -> str:
        """One line on what waits in the spool, for ``flask perfalert stats`` and ``check``."""
        return self.spool.describe_backlog(self._owns)

    def backlog_figures(self) -> dict[str, Any]:
        """``mattermost_waiting`` and ``mattermost_oldest`` (epoch seconds, or None)."""
        waiting, oldest = self.spool.backlog(self._owns)
        return {"mattermost_waiting": waiting, "mattermost_oldest": oldest}

    def send_test(self, event: SlowRequestEvent) -> dict[str, Any]:
        """Send a test alert now, once, without the spool; raises MattermostError."""
        entry = SpoolEntry(None, spool_entry(event, self.app_key, test=True), None)
        entry.data["summary"] = "the test alert"
        return self._send(entry)

    def close(self) -> None:
        """Stop replaying: the app's monitoring was closed or set up again (``init_app``).

        What waits in the spool stays there for the next process (or the new set-up).
        """
        WORKER.forget(self)


def _about_the_entry(exc: MattermostError) -> bool:
    """Whether the failure may be this alert's own (the others may go): not a setting, not 429."""
    if exc.action is Action.RETRY:
        return exc.status not in (None, 429)
    return exc.action is Action.KEEP and exc.rule.setting is None


def _backoff(retry: int, retry_after: float | None) -> float:
    """Seconds before retry number ``retry + 1``: exponential, with jitter."""
    if retry_after is not None:
        return retry_after + random.uniform(0.0, min(1.0, BACKOFF_BASE))
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2.0**retry)
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)
