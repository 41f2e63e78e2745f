"""Shared pytest configuration for cae's tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "realdata: needs the real dataset archives in $CAE_DATA_DIR (skipped when absent)",
    )
