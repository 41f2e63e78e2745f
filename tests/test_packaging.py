"""The pinned versions agree across cae/pins.py, setup.py and environment.yml."""

import pathlib
import re
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _environment_pins():
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"\s*-\s*([A-Za-z0-9_.\-\[\]]+)==([\w.]+)\s*$", line)
        if match:
            pins[match.group(1)] = match.group(2)
    python = re.search(r"-\s*python=([\d.]+)", (ROOT / "environment.yml").read_text()).group(1)
    return pins, python


def test_environment_yml_matches_pins():
    pins = runpy.run_path(str(ROOT / "cae" / "pins.py"))
    expected = {**pins["RUNTIME"], **pins["TEST"]}
    found, python = _environment_pins()
    assert found == expected
    assert python == pins["PYTHON"]


def test_setup_py_reads_pins(monkeypatch):
    captured = {}
    import setuptools

    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"))
    pins = runpy.run_path(str(ROOT / "cae" / "pins.py"))
    assert captured["install_requires"] == [f"{k}=={v}" for k, v in pins["RUNTIME"].items()]
    assert captured["extras_require"]["test"] == [f"{k}=={v}" for k, v in pins["TEST"].items()]
    assert captured["entry_points"]["console_scripts"] == ["cae=cae.cli:main"]


def test_installed_versions_match_pins():
    """What is installed is what is pinned (a drifted environment fails here first)."""
    from importlib import metadata

    pins = runpy.run_path(str(ROOT / "cae" / "pins.py"))
    for name, version in pins["RUNTIME"].items():
        assert metadata.version(name) == version, name
