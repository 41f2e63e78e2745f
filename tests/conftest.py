"""Shared pytest configuration for cae's tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "realdata: needs the real dataset archives in $CAE_DATA_DIR (skipped when absent)",
    )
    config.addinivalue_line(
        "markers",
        "notebooks: executes the notebooks with nbclient (needs the trained zoo; runs only with "
        "CAE_RUN_NOTEBOOKS=1)",
    )
