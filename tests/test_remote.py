"""Label-only verification over HTTP against real loopback servers (TF Serving REST format)."""

import json
import time

import numpy as np
import pytest

import cae
from cae import fingerprint as F
from cae import remote
from helpers import tiny_model
from model_server import GARBAGE_MODES, serve

K = 10
N = 20


@pytest.fixture(scope="module")
def source():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def suspect(source):
    """The source with noisy weights: agrees with some keys but not all."""
    model = tiny_model(seed=1)
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype)
                       for w in source.get_weights()])
    return model


@pytest.fixture(scope="module")
def fp(source):
    x = np.random.default_rng(0).random((N, 32, 32, 3), dtype=np.float32)
    return F.create(source, x, attack="test", epsilon=0.1, tau=1.0, dataset="none")


@pytest.fixture(scope="module")
def local(suspect, fp):
    return F.verify(suspect, fp)


@pytest.fixture
def start():
    """start(model, **options) -> (server, url); every server is stopped after the test."""
    servers = []

    def _start(model, **options):
        server, url = serve(model, **options)
        servers.append(server)
        return server, url

    yield _start
    for server in servers:
        server.stop()


def client(url, **options):
    options = {"batch_size": 8, "backoff": 0.01, **options}
    return remote.TFServingClient(url, **options)


# --------------------------------------------------------------------------- normal operation
def test_remote_retention_equals_local(start, suspect, fp, local):
    assert 0 < local.matches < N  # a meaningful comparison
    server, url = start(suspect)
    result = F.verify(client(url), fp)
    assert (result.retention, result.matches) == (local.retention, local.matches)
    assert result.queries == N == server.instances_received
    assert server.requests_received == 3  # 8 + 8 + 4


def test_labels_only_answers(start, suspect, fp, local):
    server, url = start(suspect, labels_only=True)
    c = client(url)
    result = F.verify(c, fp)
    assert result.matches == local.matches
    np.testing.assert_array_equal(c.predict_labels(fp.x[:5]),
                                  np.argmax(suspect.predict(fp.x[:5], verbose=0), axis=1))


def test_source_served_retains_all(start, source, fp):
    _, url = start(source, labels_only=True)
    result = F.verify(client(url), fp, threshold=0.9)
    assert result.retention == 1.0 and result.is_surrogate


def test_served_callable_and_status_endpoint(start, fp):
    server, url = start(lambda x: np.eye(K)[np.full(len(x), 4)], model_name="const")
    assert url.endswith("/v1/models/const:predict")
    assert F.verify(client(url), fp).retention == pytest.approx(np.mean(fp.keys == 4))
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url.replace(":predict", ""), timeout=5) as response:
        assert json.load(response)["model_version_status"][0]["state"] == "AVAILABLE"


# --------------------------------------------------------------------------- failures
def test_intermittent_503_succeeds_with_retries(start, suspect, fp, local):
    server, url = start(suspect, fail_every=2)
    c = client(url, retries=2)
    result = F.verify(c, fp)
    assert result.matches == local.matches
    # batches of 8, 8, 4; requests 2 and 4 failed and were resent, and resent instances
    # count as queries
    assert c.queries == server.instances_received == result.queries == N + 8 + 4
    assert c.requests == server.requests_received == 5


def test_503_without_retries_fails(start, suspect, fp):
    _, url = start(suspect, fail_every=1)
    with pytest.raises(remote.RemoteError, match=r"failed 1 times.*HTTP 503"):
        F.verify(client(url, retries=0), fp)


def test_slow_server_times_out_retries_then_errors(start, suspect, fp):
    server, url = start(suspect, delay=2.0)
    c = client(url, timeout=0.2, retries=1)
    began = time.monotonic()
    with pytest.raises(remote.RemoteError, match="failed 2 times.*TimeoutError"):
        c.predict_labels(fp.x[:4])
    assert time.monotonic() - began < 1.5  # gave up on each request after ~0.2 s
    assert c.requests == 2 and c.queries == 2 * 4
    assert server.requests_received == 2  # the retry really went out


def test_connection_refused_is_retried_then_errors(start, suspect, fp):
    server, url = start(suspect)
    server.stop()
    c = client(url, retries=2)
    with pytest.raises(remote.RemoteError, match="failed 3 times"):
        c.predict_labels(fp.x[:2])
    assert c.requests == 3


def test_client_errors_are_not_retried(start, suspect, fp):
    _, url = start(suspect)
    c = client(url.replace("suspect:predict", "other:predict"), retries=3, backoff=1.0)
    began = time.monotonic()
    with pytest.raises(remote.RemoteError, match="HTTP 404"):
        c.predict_labels(fp.x[:2])
    assert c.requests == 1 and time.monotonic() - began < 0.9


@pytest.mark.parametrize("mode", GARBAGE_MODES)
def test_garbage_answers_are_refused(start, suspect, fp, mode):
    server, url = start(suspect, garbage=mode)
    c = client(url, retries=3)
    with pytest.raises(remote.MalformedResponseError, match=url.split("/v1")[0]):
        F.verify(c, fp)
    assert server.requests_received == 1  # malformed answers are not retried


def test_class_count_mismatch_is_refused(start, fp):
    _, url = start(tiny_model(num_classes=5))
    with pytest.raises(remote.MalformedResponseError, match="5 classes"):
        F.verify(client(url), fp)


# --------------------------------------------------------------------------- query budget
def test_budget_smaller_than_fingerprint(start, suspect, fp):
    server, url = start(suspect)
    c = client(url, max_queries=N - 1)
    with pytest.raises(remote.QueryBudgetExceeded, match="nothing was sent"):
        F.verify(c, fp)
    assert server.instances_received == 0 <= c.max_queries and c.queries == 0


def test_budget_exhausted_by_retries_is_never_exceeded(start, suspect, fp):
    server, url = start(suspect, fail_every=2)
    c = client(url, max_queries=N, batch_size=5, retries=3)
    with pytest.raises(remote.QueryBudgetExceeded):
        F.verify(c, fp)
    # batch 1 ok, batch 2 failed (503) and resent, batch 3 failed: 20 sent, its resend refused
    assert server.instances_received == c.queries == N
    assert c.remaining == 0


def test_budget_exactly_enough(start, suspect, fp, local):
    server, url = start(suspect)
    c = client(url, max_queries=N)
    assert F.verify(c, fp).matches == local.matches
    assert c.remaining == 0 and server.instances_received == N


# --------------------------------------------------------------------------- parsing, arguments
@pytest.mark.parametrize("answer, expected", [
    ({"predictions": [[0.1, 0.9], [0.8, 0.2]]}, [1, 0]),
    ({"predictions": [1, 0]}, [1, 0]),
    ({"predictions": [[1], [0]]}, [1, 0]),
    ({"predictions": [1.0, 0.0]}, [1, 0]),
])
def test_parse_predictions_formats(answer, expected):
    labels = remote._parse_predictions(json.dumps(answer).encode(), 2, 2, "u")
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int64


@pytest.mark.parametrize("raw", [
    b"null", b"[1, 2]", b'{"predictions": 3}', b'{"predictions": [1.5, 0]}',
    b'{"predictions": [true, false]}', b'{"predictions": [[0.1, NaN], [1, 0]]}',
    b'{"predictions": [-1, 0]}', b'{"predictions": [[0.1, 0.2, 0.7], [1, 0, 0]]}',
])
def test_parse_predictions_refuses(raw):
    with pytest.raises(remote.MalformedResponseError):
        remote._parse_predictions(raw, 2, 2, "u")


@pytest.mark.parametrize("kwargs", [
    dict(url="ftp://host/x"), dict(url="not a url"), dict(url="http://h/", timeout=0),
    dict(url="http://h/", batch_size=0), dict(url="http://h/", max_queries=-1),
    dict(url="http://h/", retries=-1), dict(url="http://h/", backoff=-1),
    dict(url="http://h/", batch_size=2.5),
])
def test_client_argument_checks(kwargs):
    with pytest.raises(ValueError):
        remote.TFServingClient(**kwargs)


def test_client_refuses_bad_inputs_before_sending():
    c = remote.TFServingClient("http://127.0.0.1:9/v1/models/m:predict")
    with pytest.raises(ValueError, match="shape"):
        c.predict_labels(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        c.predict_labels(np.full((2, 32, 32, 3), 2.0, np.float32))
    assert c.queries == 0


def test_serve_is_loopback_only(suspect):
    with pytest.raises(ValueError, match="loopback"):
        serve(suspect, host="0.0.0.0")
    with pytest.raises(ValueError, match="garbage"):
        serve(suspect, garbage="nonsense")


# --------------------------------------------------------------------------- ART black box
def test_blackbox_suspect_labels_and_scores(suspect, fp, local):
    def labels_fn(x):
        return np.argmax(suspect.predict(x, verbose=0), axis=1)

    wrapped = remote.blackbox_suspect(labels_fn, K)
    from art.estimators.classification import BlackBoxClassifier
    assert isinstance(wrapped, BlackBoxClassifier)
    assert F.verify(wrapped, fp).matches == local.matches
    # batch of K inputs: a (K,) label vector must not be broadcast over the (K, K) scores
    batch = fp.x[:K]
    np.testing.assert_array_equal(np.argmax(wrapped.predict(batch), axis=1), labels_fn(batch))
    scores = remote.blackbox_suspect(lambda x: suspect.predict(x, verbose=0), K)
    assert F.verify(scores, fp).matches == local.matches


def test_blackbox_suspect_class_count_mismatch(fp):
    wrapped = remote.blackbox_suspect(lambda x: np.zeros(len(x), int), 7)
    with pytest.raises(ValueError, match="7 classes but the fingerprint has 10"):
        F.verify(wrapped, fp)


def test_version_is_recorded(fp):
    assert fp.manifest["cae_version"] == cae.__version__
