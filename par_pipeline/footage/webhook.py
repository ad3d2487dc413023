"""Alert events POSTed as JSON to a webhook, from a thread of its own: a slow or failing server never holds the video.

urllib3 does the HTTP: POST only; redirects are not followed (a 3xx is a failure: an alert's body is never re-sent
elsewhere as a GET); connection errors, 429 and 5xx are retried with exponential backoff, honouring Retry-After;
other 4xx fail at once. The webhook is named scheme://host[:port] only in records, pages and messages: its path and
query often hold the token that lets anyone post to it.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

import urllib3
from urllib3.util import Retry, Timeout

from ..errors import ParError, masked, server_of

WEBHOOK_TIMEOUT_S = 5.0  # connect and read, per attempt
WEBHOOK_RETRIES = 3  # after the first attempt
WEBHOOK_BACKOFF_S = 0.25  # 0.25, 0.5, 1 s between attempts (a Retry-After header takes precedence)
RETRY_STATUS = (429, 500, 502, 503, 504)
FINISH_WAIT_S = 30.0  # at the end of a run, how long the queue may take to drain


def _quiet_urllib3() -> None:
    """urllib3 logs each retry with the request's path, which may hold the webhook's token: par says what failed
    itself (masked), so those records are dropped."""
    log = logging.getLogger("urllib3.connectionpool")
    if not any(getattr(f, "par_quiet", False) for f in log.filters):
        drop = logging.Filter()
        drop.filter = lambda record: False  # type: ignore[method-assign]
        drop.par_quiet = True  # type: ignore[attr-defined]
        log.addFilter(drop)


class Webhook:
    """`post(event)` queues an event; `close()` waits for the queue and says what was delivered."""

    def __init__(self, url: str, retries: int = WEBHOOK_RETRIES, backoff: float = WEBHOOK_BACKOFF_S,
                 timeout: float = WEBHOOK_TIMEOUT_S):
        if not url.lower().startswith(("http://", "https://")):
            raise ParError(f"--alert-webhook {masked(url)}: give an http:// or https:// URL")
        self.url, self.name = url, server_of(url)
        _quiet_urllib3()
        self.queued = self.sent = self.failed = self.retried = 0
        self.last_error = ""
        counter = self

        class CountedRetry(Retry):  # urllib3 makes a new Retry per attempt; each one made is a retry
            def increment(self, *args: Any, **kwargs: Any) -> Retry:
                step = super().increment(*args, **kwargs)  # raises MaxRetryError once exhausted
                counter.retried += 1
                return step

        retry = CountedRetry(total=retries, connect=retries, read=retries, status=retries, other=0, redirect=False,
                             allowed_methods=frozenset({"POST"}), status_forcelist=RETRY_STATUS,
                             backoff_factor=backoff, respect_retry_after_header=True, raise_on_status=False)
        self._http = urllib3.PoolManager(retries=retry, timeout=Timeout(connect=timeout, read=timeout),
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "par-alerts"})
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def post(self, event: dict[str, Any]) -> None:
        self.queued += 1
        self._queue.put(event)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                answer = self._http.request("POST", self.url, body=json.dumps(event).encode(), redirect=False)
            except urllib3.exceptions.HTTPError as exc:  # MaxRetryError after the retries, or a protocol error
                reason = getattr(exc, "reason", None) or exc
                self._failed(f"{type(reason).__name__}: {reason}")
                continue
            if 200 <= answer.status < 300:
                self.sent += 1
            elif 300 <= answer.status < 400:
                self._failed(f"HTTP {answer.status}: redirects are not followed; give the final URL")
            else:
                self._failed(f"HTTP {answer.status}")

    def _failed(self, why: str) -> None:
        self.failed += 1
        self.last_error = masked(why).replace(self.url, self.name)[:200]

    def close(self, wait_s: float = FINISH_WAIT_S) -> dict[str, Any]:
        """Waits up to `wait_s` for the events still queued; says what was delivered (README: tracks.json)."""
        self._queue.put(None)
        self._thread.join(wait_s)
        return {"url": self.name, "posted": self.queued, "sent": self.sent, "failed": self.failed,
                "retries": self.retried, "undelivered": self.queued - self.sent - self.failed,
                "last_error": self.last_error}
