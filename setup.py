"""Package discovery for the four top-level folders that install under ``limbseg_rt``.

Everything else about the project is in ``pyproject.toml``. setuptools' own discovery cannot rename
folders (``runtime/`` installs as ``limbseg_rt.runtime``), so this file finds the sub-packages of
each folder and prefixes them.
"""

from setuptools import find_packages, setup

ROOTS = {
    "limbseg_rt": "limbseg_rt",
    "limbseg_rt.runtime": "runtime",
    "limbseg_rt.models": "models",
    "limbseg_rt.export": "export",
}

setup(
    package_dir=ROOTS,
    packages=[p for name, folder in ROOTS.items() for p in [name, *(f"{name}.{sub}" for sub in find_packages(folder))]],
)
