"""Builds the router's hot path with mypyc (the rest of the metadata is in pyproject.toml).

The extensions are optional: without a C compiler the install still works, interpreted, and
the router says so when it starts (`sandboxd_router.native`).
"""

import runpy
from pathlib import Path

from mypyc.build import mypycify
from setuptools import setup

PACKAGE_DIR = Path(__file__).resolve().parent / "src" / "sandboxd_router"
native = runpy.run_path(str(PACKAGE_DIR / "native.py"))
native["write_manifest"](PACKAGE_DIR)

extensions = mypycify(
    [f"src/sandboxd_router/{name}.py" for name in native["HOT"]],
    group_name=native["PACKAGE"],
)
for extension in extensions:
    extension.optional = True

setup(ext_modules=extensions)
