"""Builds the router's hot path with mypyc (the rest of the metadata is in pyproject.toml).

The extensions are optional: without a C compiler the install still works, interpreted, and
the router says so when it starts. The manifest that lets `sandboxd_router.native` use the
compiled modules is written only after every one of them was built by this very run, beside
them (in the source tree for an editable install, in the wheel otherwise), with the digests of
the sources as they were when the build began. Only a build that writes a new manifest, or one
that replaced some modules and failed on others, removes the old one: an attempt that fails
before compiling (or builds elsewhere, as `pip wheel` does) leaves an editable tree's working
build alone, and a partial build can never pass for a good one. SANDBOXD_ROUTER_INTERPRETED=1
builds no extension (scripts/setup falls back to it when the compiled build fails).
"""

import os
import runpy
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PACKAGE_DIR = Path(__file__).resolve().parent / "src" / "sandboxd_router"
native = runpy.run_path(str(PACKAGE_DIR / "native.py"))
HOT, MANIFEST = native["HOT"], native["MANIFEST"]

C_MODULES = native["C_MODULES"]
SOURCES = native["built_sources"](PACKAGE_DIR)

if os.environ.get("SANDBOXD_ROUTER_INTERPRETED"):  # a plain install, on purpose
    extensions = []
else:
    from mypyc.build import mypycify  # (type-checks and compiles the sources, or exits)

    # The build's own mypy configuration (not the repository's, whose plugins an isolated
    # build environment does not have): the router type-checks with its own dependencies only.
    extensions = mypycify(
        [
            "--config-file",
            str(PACKAGE_DIR.parents[1] / "mypyc.ini"),
            *(str(native["source"](Path("src/sandboxd_router"), name)) for name in HOT),
        ],
        group_name=native["PACKAGE"],
    )
    extensions += [
        Extension(
            f"{native['PACKAGE']}.{name}",
            [f"src/sandboxd_router/{name}.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
        for name in C_MODULES
    ]
    for extension in extensions:
        extension.optional = True


class BuildExt(build_ext):
    failed: list[str]

    def run(self) -> None:
        out = Path(self.get_ext_fullpath(f"{native['PACKAGE']}.{HOT[0]}")).parent
        self.failed = []
        super().run()
        built = [Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions]
        missing = self.failed + [path.name for path in built if not path.exists()]
        if not self.extensions:
            return
        if missing:
            if len(self.failed) < len(self.extensions):  # some replaced, beside an older manifest
                (out / MANIFEST).unlink(missing_ok=True)
            print(f"sandboxd-router: not compiled ({', '.join(missing)}): it runs interpreted")
        else:
            native["write_manifest"](out, SOURCES)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            self.failed.append(ext.name)  # an optional one: setuptools reports it and goes on
            raise


setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
