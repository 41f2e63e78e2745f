"""Label-only verification of a model behind an HTTP API (TensorFlow Serving REST).

:class:`TFServingClient` queries ``POST <url>`` (for example
``http://host:8501/v1/models/NAME:predict``) with ``{"instances": [...]}``, each
instance a 32x32x3 nested list of floats in [0, 1], and accepts either
``{"predictions": [[p_0, ..., p_{K-1}], ...]}`` (class scores; the argmax is taken)
or ``{"predictions": [label, ...]}`` (class indices; ``[[label], ...]`` too). It can
be passed as the ``suspect`` of :func:`cae.fingerprint.verify`.

Query accounting: every instance sent over the wire counts as one query, retried
ones included, because a remote party may bill (or notice) every request it
receives. With ``max_queries`` set, the budget is never exceeded: a call that needs
more queries than are left fails before anything is sent, and each batch (also a
retry) is checked again before it is sent; :class:`QueryBudgetExceeded` is raised
instead of sending.

:func:`blackbox_suspect` wraps any Python function as an ART ``BlackBoxClassifier``.
(The tests serve models in this format from ``tests/model_server.py``.)

Standard library only (``urllib``), plus NumPy.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from cae.data import IMAGE_SHAPE, onehot

if TYPE_CHECKING:
    from art.estimators.classification import BlackBoxClassifier

log = logging.getLogger(__name__)

__all__ = [
    "MalformedResponseError", "QueryBudgetExceeded", "RemoteError", "TFServingClient", "blackbox_suspect",
]


class RemoteError(RuntimeError):
    """The remote model could not be queried (HTTP error, timeouts, retries used up)."""


class MalformedResponseError(RemoteError):
    """The remote model answered, but not with valid predictions."""


class QueryBudgetExceeded(RemoteError):
    """Sending the next batch would exceed ``max_queries``; nothing was sent."""


# --------------------------------------------------------------------------- client
def _is_loopback(host):
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TFServingClient:
    """Label-only client for a classifier served in the TensorFlow Serving REST format.

    ``timeout``: seconds per request. ``batch_size``: instances per request.
    ``max_queries``: budget of instances sent over the wire (None: unlimited).
    ``retries``: extra attempts after a 5xx answer, a timeout or a connection error
    (4xx answers and malformed answers are not retried); attempt ``i`` waits
    ``backoff * 2 ** i`` seconds first. ``num_classes``: if given, answers are checked
    against it (:func:`cae.fingerprint.verify` passes the fingerprint's).

    ``queries`` counts instances sent (retries included), ``requests`` HTTP requests.
    Not thread-safe: use one client per thread.
    """

    def __init__(self, url: str, timeout: float = 10.0, batch_size: int = 64, max_queries: int | None = None,
                 retries: int = 3, backoff: float = 0.5, num_classes: int | None = None) -> None:
        parsed = urllib.parse.urlsplit(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"url must be an http(s) URL such as http://host:8501/v1/models/NAME:predict, "
                f"got {url!r}."
            )
        self.url = str(url)
        self.timeout = self._positive(timeout, "timeout", float)
        self.batch_size = self._positive(batch_size, "batch_size", int)
        if max_queries is not None and (int(max_queries) != max_queries or max_queries < 0):
            raise ValueError(f"max_queries must be None or an integer >= 0, got {max_queries!r}.")
        self.max_queries = None if max_queries is None else int(max_queries)
        if int(retries) != retries or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}.")
        self.retries = int(retries)
        if float(backoff) < 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {backoff!r}.")
        self.backoff = float(backoff)
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be None or >= 2, got {num_classes!r}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.queries = 0
        self.requests = 0
        # Loopback traffic never goes through a proxy from the environment.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parsed.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    @staticmethod
    def _positive(value, name, kind):
        if isinstance(value, bool) or kind(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}.")
        return kind(value)

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget (None when unlimited)."""
        return None if self.max_queries is None else self.max_queries - self.queries

    def __repr__(self):
        return (f"TFServingClient({self.url!r}, queries={self.queries}, "
                f"max_queries={self.max_queries})")

    def _spend(self, count):
        if self.max_queries is not None and self.queries + count > self.max_queries:
            raise QueryBudgetExceeded(
                f"sending {count} more inputs would exceed the budget of {self.max_queries} "
                f"queries ({self.queries} used); nothing was sent. Raise max_queries or "
                "verify a smaller fingerprint."
            )
        self.queries += count

    def predict_labels(self, x: np.ndarray, num_classes: int | None = None) -> np.ndarray:
        """Top-1 labels (int64, shape (n,)) of the remote model on float32 images ``x``."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"x has shape {x.shape}; expected (n, 32, 32, 3) images in [0, 1].")
        if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
            raise ValueError("x must hold finite values in [0, 1].")
        num_classes = self.num_classes if num_classes is None else int(num_classes)
        if self.remaining is not None and len(x) > self.remaining:
            raise QueryBudgetExceeded(
                f"{len(x)} inputs requested but only {self.remaining} of the {self.max_queries} "
                "queries are left; nothing was sent. Raise max_queries or verify a smaller "
                "fingerprint."
            )
        labels = [self._predict_batch(x[start:start + self.batch_size], num_classes)
                  for start in range(0, len(x), self.batch_size)]
        return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)

    __call__ = predict_labels

    def _predict_batch(self, batch, num_classes):
        body = json.dumps({"instances": batch.astype(np.float32).tolist()}).encode()
        last_error = None
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("retrying %s in %.2f s (attempt %d of %d) after: %s",
                            self.url, delay, attempt + 1, self.retries + 1, last_error)
                time.sleep(delay)
            self._spend(len(batch))
            self.requests += 1
            try:
                answer = self._post(body)
            except urllib.error.HTTPError as err:
                detail = err.read(300).decode("utf-8", "replace") if err.fp else ""
                err.close()
                if 500 <= err.code < 600:
                    last_error = f"HTTP {err.code} {err.reason}"
                    continue
                raise RemoteError(
                    f"{self.url} answered HTTP {err.code} {err.reason}: {detail!r}. Client "
                    "errors are not retried: check the URL (…/v1/models/NAME:predict) and "
                    "that the model takes (32, 32, 3) float inputs."
                ) from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                    TimeoutError, socket.timeout) as err:
                last_error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
                continue
            return _parse_predictions(answer, len(batch), num_classes, self.url)
        raise RemoteError(
            f"{self.url} failed {self.retries + 1} times; last error: {last_error}. Check that "
            "the server is up, or raise timeout / retries."
        )

    def _post(self, body):
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return response.read()


def _parse_predictions(raw, count, num_classes, url):
    def bad(why):
        return MalformedResponseError(
            f"{url} answered with {why}; expected {{\"predictions\": [...]}} with {count} "
            f"class-score rows or labels. Answer starts: {raw[:120]!r}"
        )

    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("something that is not JSON") from None
    if not isinstance(answer, dict) or "predictions" not in answer:
        raise bad("no 'predictions' field")
    predictions = answer["predictions"]
    if not isinstance(predictions, list) or len(predictions) != count:
        length = len(predictions) if isinstance(predictions, list) else type(predictions).__name__
        raise bad(f"{length} predictions for {count} inputs")

    def numeric(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    rows = all(isinstance(p, list) for p in predictions)
    if rows:
        widths = {len(p) for p in predictions}
        if len(widths) > 1 or not all(numeric(v) for p in predictions for v in p):
            raise bad("rows of different lengths or non-numeric values")
        scores = np.asarray(predictions, dtype=np.float64).reshape(count, -1)
        if not np.all(np.isfinite(scores)):
            raise bad("non-finite values")
        if scores.shape[1] == 1:  # [[label], ...]
            values = scores[:, 0]
        else:
            if num_classes is not None and scores.shape[1] != num_classes:
                raise bad(f"scores for {scores.shape[1]} classes (the fingerprint has "
                          f"{num_classes})")
            return np.argmax(scores, axis=1).astype(np.int64)
    else:
        if not all(numeric(p) for p in predictions):
            raise bad("non-numeric predictions")
        values = np.asarray(predictions, dtype=np.float64)
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise bad("labels that are not integers")
    labels = values.astype(np.int64)
    upper = num_classes if num_classes is not None else np.iinfo(np.int64).max
    if labels.size and (labels.min() < 0 or labels.max() >= upper):
        raise bad(f"labels in [{labels.min()}, {labels.max()}] outside 0..{upper - 1}")
    return labels


# --------------------------------------------------------------------------- ART
def blackbox_suspect(fn: Callable[[np.ndarray], np.ndarray], num_classes: int) -> BlackBoxClassifier:
    """Wrap ``fn(x) -> labels (b,) or class scores (b, K)`` as an ART ``BlackBoxClassifier``.

    Labels are turned into one-hot rows (ART's ``BlackBoxClassifier.predict`` writes
    the function's output into a (b, K) array; a (b,) label vector would be silently
    broadcast). The result can be passed to :func:`cae.fingerprint.verify` or to ART's
    black-box attacks.
    """
    from art.estimators.classification import BlackBoxClassifier

    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}.")

    def predict_fn(x):
        output = np.asarray(fn(x))
        if output.ndim == 2 and output.shape[1] == 1:
            output = output[:, 0]
        if output.ndim == 1:
            labels = output.astype(np.int64)
            if output.shape != (len(x),) or not np.all(labels == output) \
                    or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
                raise ValueError(
                    f"fn returned {output.shape} values that are not labels in "
                    f"0..{num_classes - 1} for {len(x)} inputs."
                )
            return onehot(labels, num_classes)
        if output.shape != (len(x), num_classes):
            raise ValueError(
                f"fn returned shape {output.shape}; expected ({len(x)},) labels or "
                f"({len(x)}, {num_classes}) class scores."
            )
        return output

    return BlackBoxClassifier(predict_fn, input_shape=IMAGE_SHAPE, nb_classes=num_classes,
                              clip_values=(0.0, 1.0))
