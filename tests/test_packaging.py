"""Packaging: the pinned versions agree across cae/pins.py, setup.py and environment.yml;
the README's two commands are what `run` offers and CI runs."""

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
    expected = {**pins["RUNTIME"], **pins["TEST"], **pins["CLUSTER"]}
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
    assert captured["extras_require"]["test"] == [f"{k}=={v}" for k, v in {**pins["TEST"], **pins["CLUSTER"]}.items()]
    assert captured["extras_require"]["cluster"] == [f"{k}=={v}" for k, v in pins["CLUSTER"].items()]
    assert captured["entry_points"]["console_scripts"] == ["cae=cae.cli:main"]


def test_installed_versions_match_pins():
    """What is installed is what is pinned (a drifted environment fails here first)."""
    from importlib import metadata

    pins = runpy.run_path(str(ROOT / "cae" / "pins.py"))
    for name, version in pins["RUNTIME"].items():
        assert metadata.version(name) == version, name


def _commands(text):
    """The command lines of a shell text: comments, blank lines and variable set-up left out."""
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not re.match(r"(export |set |cd |if |fi\b|\w+=)", line)]


def test_readme_first_block_is_the_main_job_and_the_tests():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert _commands(block) == ["./run table2", "./run test"]
    assert (ROOT / "run").stat().st_mode & 0o111, "run must be executable (git update-index --chmod=+x run)"


def test_ci_runs_the_readme_test_command_and_nothing_else():
    commands = _commands((ROOT / ".ci" / "run").read_text())
    assert [c for c in commands if not c.startswith("echo ")] == ["./run test"]


def test_run_without_a_job_is_a_usage_error():
    import subprocess

    result = subprocess.run(["sh", str(ROOT / "run")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "./run table2 | ./run test" in result.stderr
