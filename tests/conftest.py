"""Shared pytest configuration for cae's tests."""

# cae sets TensorFlow's environment defaults (oneDNN kernels) when imported; importing it
# before any test module imports TensorFlow keeps this process and the subprocesses the
# tests start on the same kernels, whose results differ in the last bits.
import cae  # noqa: F401

# ART's import gives its "tests" logger a StreamHandler on the sys.stderr of that moment.
# Imported first inside a test that captures output (capsys), that stream is closed after
# the test, and a later test whose code logs through that logger fails writing to it (and
# takes pytest's stderr with it). Importing ART here binds the handler to the session's
# stderr instead.
import art  # noqa: F401,E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "realdata: needs the real dataset archives in $CAE_DATA_DIR (skipped when absent)",
    )
    config.addinivalue_line(
        "markers",
        "notebooks: executes the notebooks with nbclient on real data ($CAE_NOTEBOOK_PRESET, "
        "default smoke; trains its zoo first)",
    )
