"""Logging of the `pix2seqd` package: one stderr handler on the package's logger.

Modules log through `logging.getLogger(__name__)`, so every logger of the package is a child
of `pix2seqd` and takes its level and handler from here. Only that logger is configured: the
root logger, and so the logging of Ray, MLflow and the other libraries, is left as they set
it. The package's records do not propagate to the root logger: Ray gives the root logger a
handler of its own, on a job's driver and in Train and Tune workers, which would print every
line a second time (tests that read records with `caplog` turn propagation back on).

A job's driver calls `configure_logging` once its flags are parsed (platform/cli.py,
`parse_job_args`); a Ray worker process starts with logging unconfigured, so code that runs
in workers and logs below WARNING calls it at the worker's entry with the driver's level
(`package_level()`, passed along with the worker's other arguments).
"""

from __future__ import annotations

import logging

PACKAGE = "pix2seqd"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class _PackageHandler(logging.StreamHandler):
    """The handler `configure_logging` adds (its type tells it apart from any other)."""


def level_for(verbosity: int) -> int:
    """-q (verbosity < 0) -> WARNING, neither -> INFO, -v (verbosity > 0) -> DEBUG."""
    if verbosity < 0:
        return logging.WARNING
    return logging.DEBUG if verbosity > 0 else logging.INFO


def configure_logging(level: int = logging.INFO, propagate: bool = False) -> logging.Logger:
    """Send the package's records at `level` and above to stderr, formatted with FORMAT;
    `propagate=True` also hands them to the root logger's handlers.

    Safe to call again in the same process (jobs run in-process by tests, a reused Ray
    worker): the level is updated and the handler is not added twice."""
    logger = logging.getLogger(PACKAGE)
    logger.setLevel(level)
    logger.propagate = propagate
    if not any(isinstance(h, _PackageHandler) for h in logger.handlers):
        handler = _PackageHandler()  # stderr: stdout carries the jobs' results
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        logger.addHandler(handler)
    return logger


def package_level() -> int:
    """The level the package's loggers log at in this process (WARNING when unconfigured,
    logging's default)."""
    return logging.getLogger(PACKAGE).getEffectiveLevel()
