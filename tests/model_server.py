"""A small threaded HTTP server that serves a model in the TensorFlow Serving REST format
on the loopback interface, for the tests of :class:`cae.remote.TFServingClient` and
``cae verify --url``. It can answer labels only, be slow, fail every k-th request with
503, or return garbage (:data:`GARBAGE_MODES`).

Standard library only (``http.server``), plus NumPy and Keras.
"""

import http.server
import json
import logging
import socket
import threading
import time

import keras
import numpy as np

from cae.data import IMAGE_SHAPE
from cae.remote import _is_loopback

log = logging.getLogger(__name__)

GARBAGE_MODES = ("not_json", "no_predictions", "wrong_length", "non_numeric",
                 "out_of_range", "ragged")


class ModelServer(http.server.ThreadingHTTPServer):
    """HTTP server from :func:`serve`; ``instances_received`` and ``requests_received``
    count what reached it. ``stop()`` (or leaving a ``with`` block) shuts it down."""

    daemon_threads = True

    def __init__(self, address, handler, predict, num_classes, model_name, labels_only,
                 delay, fail_every, garbage):
        super().__init__(address, handler)
        self.predict = predict
        self.num_classes = num_classes
        self.model_name = model_name
        self.labels_only = labels_only
        self.delay = delay
        self.fail_every = fail_every
        self.garbage = garbage
        self.instances_received = 0
        self.requests_received = 0
        self.counter_lock = threading.Lock()
        self.model_lock = threading.Lock()
        self.thread = None

    def handle_error(self, request, client_address):
        # Clients that time out close the connection while a slow handler sleeps.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def stop(self):
        self.shutdown()
        self.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def __exit__(self, *exc_info):
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "cae-model-server/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        log.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status, payload):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        server = self.server
        if self.path.rstrip("/") == f"/v1/models/{server.model_name}":
            self._send(200, {"model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]})
        else:
            self._send(404, {"error": f"unknown path {self.path}"})

    def do_POST(self):
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != f"/v1/models/{server.model_name}:predict":
            self._send(404, {"error": f"unknown path {self.path}; POST "
                                      f"/v1/models/{server.model_name}:predict"})
            return
        try:
            instances = np.asarray(json.loads(body)["instances"], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as err:
            self._send(400, {"error": f"cannot read instances: {err}"})
            return
        if instances.ndim != 4 or instances.shape[1:] != IMAGE_SHAPE:
            self._send(400, {"error": f"instances have shape {instances.shape}; "
                                      "expected (n, 32, 32, 3)"})
            return
        with server.counter_lock:
            server.requests_received += 1
            server.instances_received += len(instances)
            number = server.requests_received
        if server.delay:
            time.sleep(server.delay)
        if server.fail_every and number % server.fail_every == 0:
            self._send(503, {"error": "temporarily unavailable"})
            return
        try:
            with server.model_lock:
                scores = np.asarray(server.predict(instances), dtype=np.float64)
        except Exception as err:  # report the model's failure to the client as TF Serving does
            log.exception("the served model failed")
            self._send(500, {"error": f"{type(err).__name__}: {err}"})
            return
        labels = np.argmax(scores, axis=1)
        predictions = labels.tolist() if server.labels_only else scores.tolist()
        if server.garbage:
            predictions = _garbage(server.garbage, predictions, labels, server.num_classes)
        self._send(200, predictions if isinstance(predictions, bytes)
                   else {"predictions": predictions})


def _garbage(mode, predictions, labels, num_classes):
    if mode == "not_json":
        return b"<html><body>Internal error</body></html>"
    if mode == "no_predictions":
        return json.dumps({"outputs": predictions}).encode()
    if mode == "wrong_length":
        return predictions[:-1]
    if mode == "non_numeric":
        return [str(label) for label in labels.tolist()]
    if mode == "out_of_range":
        return [num_classes + 3 for _ in labels]
    if mode == "ragged":
        return [[0.5] * (num_classes - (i % 2)) for i in range(len(labels))]
    raise ValueError(f"garbage must be None or one of {GARBAGE_MODES}, got {mode!r}.")


def serve(model, host="127.0.0.1", port=0, *, model_name="suspect", labels_only=False,
          delay=0.0, fail_every=0, garbage=None):
    """Serve ``model`` in the TensorFlow Serving REST format on the loopback interface.

    ``model``: a Keras model or a callable mapping float32 (b, 32, 32, 3) to class
    scores (b, K). Returns ``(server, url)``; the server runs in a daemon thread until
    ``server.stop()``. ``port=0`` picks a free port. Test options: ``labels_only``
    answers class indices; ``delay`` sleeps that many seconds per request;
    ``fail_every=k`` answers every k-th request with 503 (after counting its
    instances); ``garbage`` returns a malformed answer, one of :data:`GARBAGE_MODES`.
    """
    if not _is_loopback(host):
        raise ValueError(f"serve binds to loopback addresses only (127.0.0.1, ::1), got {host!r}.")
    if garbage is not None and garbage not in GARBAGE_MODES:
        raise ValueError(f"garbage must be None or one of {GARBAGE_MODES}, got {garbage!r}.")
    if float(delay) < 0 or int(fail_every) < 0:
        raise ValueError(f"delay and fail_every must be >= 0, got {delay!r}, {fail_every!r}.")
    if not all(c.isalnum() or c in "_-." for c in model_name):
        raise ValueError(f"model_name may hold letters, digits, '_', '-', '.', got {model_name!r}.")
    num_classes = None
    if isinstance(model, keras.Model):
        num_classes = int(model.output_shape[-1])

        def predict(x):
            return keras.ops.convert_to_numpy(model(x, training=False))
    elif callable(model):
        predict = model
    else:
        raise TypeError(f"model must be a Keras model or a callable, got {type(model).__name__}.")
    if num_classes is None:
        num_classes = int(np.asarray(predict(np.zeros((1,) + IMAGE_SHAPE, np.float32))).shape[-1])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("_ModelServer", (ModelServer,), {"address_family": family})
    server = server_class((host, int(port)), _Handler, predict, num_classes, model_name,
                          bool(labels_only), float(delay), int(fail_every), garbage)
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}/v1/models/{model_name}:predict"
    server.thread = threading.Thread(target=server.serve_forever, name=f"serve {url}",
                                     kwargs={"poll_interval": 0.05}, daemon=True)
    server.thread.start()
    log.info("serving %s at %s", getattr(model, "name", model_name), url)
    return server, url
