"""Installs cae; dependency versions come from cae/pins.py."""

import pathlib
import runpy

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent
pins = runpy.run_path(str(here / "cae" / "pins.py"))
version = runpy.run_path(str(here / "cae" / "__init__.py"))["__version__"]

setup(
    name="cae",
    version=version,
    description="DNN fingerprinting by conferrable adversarial examples (Lukas et al.)",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["cae", "cae.*"]),
    python_requires=f">={pins['PYTHON']}",
    install_requires=pins["requirements"](pins["RUNTIME"]),
    extras_require={
        "test": pins["requirements"](pins["TEST"]) + pins["requirements"](pins["CLUSTER"]),
        "cluster": pins["requirements"](pins["CLUSTER"]),
    },
    entry_points={"console_scripts": ["cae=cae.cli:main"]},
)
