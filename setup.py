"""Package layout: the import package `pix2seqd` is a namespace mapped onto the top-level
folders. None of them has an `__init__.py` at its top, so with the repository root first on
sys.path (Ray's working_dir) `import platform` still resolves to the standard library.
Nested subpackages are found automatically so none is silently left out of a wheel."""

from setuptools import find_namespace_packages, setup

TOPS = ("platform", "models", "jobs", "sweeps")
packages = [f"pix2seqd.{t}" for t in TOPS] + [
    f"pix2seqd.{t}.{p}" for t in TOPS for p in find_namespace_packages(t, exclude=["*__pycache__*"])
]
setup(packages=packages, package_dir={f"pix2seqd.{t}": t for t in TOPS})
