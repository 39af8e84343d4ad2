"""The flags every job and sweep shares (docs/cli.md): -q / -v and the logging they set, and
--data-root with the older spellings kept as aliases."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest

from pix2seqd.platform import log as pix2seqd_log
from pix2seqd.platform.cli import job_parser, parse_job_args
from pix2seqd.platform.sweep.cli import build_parser as sweep_parser
from pix2seqd.platform.train.options import RESUME_AUTO

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.py"))

# The flags each parser requires, so that a parse gets as far as the flag under test.
REQUIRED = {
    "benchmark": ["model"],
    "convert_official": ["--tf-checkpoint", "T", "--out", "O"],
    "distill": ["--teacher", "T", "--rounds", "1"],
    "eval_coco": ["--pred-dir", "P", "--out", "R.json"],
    "eval_davis": ["--results-dir", "P", "--out", "J.json", "--data-root", "D"],
    "make_synthetic": ["--out", "O"],
    "predict": ["--input", "I", "--out", "O"],
    "prepare_data": ["--dataset", "coco", "--out", "O", "--data-root", "D"],
    "inference": ["--checkpoint", "C"],
}
# jobs with a data root -> the older name of --data-root that still works ('' = none)
DATA_ROOT_ALIASES = {
    "train_coco": "",
    "train_davis": "--davis-root",
    "eval_coco": "",
    "eval_davis": "--davis-root",
    "prepare_data": "--root",
    "distill": "",
    **{name: "" for name in SWEEPS},
}


def parser_of(name: str):
    if name in SWEEPS:
        return sweep_parser(importlib.import_module(f"pix2seqd.sweeps.{name}").SWEEP)
    return importlib.import_module(f"pix2seqd.jobs.{name}").build_parser()


@pytest.fixture
def package_logger():
    """The `pix2seqd` logger without the handler and level a job sets, restored after."""
    logger = logging.getLogger(pix2seqd_log.PACKAGE)
    saved = logger.level, list(logger.handlers)
    logger.handlers = [
        h for h in logger.handlers if not isinstance(h, pix2seqd_log._PackageHandler)
    ]
    yield logger
    logger.setLevel(saved[0])
    logger.handlers = saved[1]


def test_the_list_of_entry_points_is_complete():
    assert {
        "train_coco",
        "train_davis",
        "eval_coco",
        "eval_davis",
        "predict",
        "prepare_data",
        "make_synthetic",
        "benchmark",
    } <= set(JOBS)
    assert {"inference", "input_scale", "loss", "loss_weight"} <= set(SWEEPS)


@pytest.mark.parametrize("name", JOBS + SWEEPS)
def test_every_job_takes_q_and_v(name):
    parser, required = parser_of(name), REQUIRED.get(name, [])
    assert parser.parse_args(required).verbosity == 0
    for flags, verbosity in ((["-q"], -1), (["--quiet"], -1), (["-v"], 1), (["--verbose"], 1)):
        assert parser.parse_args(flags + required).verbosity == verbosity
    with pytest.raises(SystemExit):
        parser.parse_args(["-q", "-v"] + required)


@pytest.mark.parametrize("name", sorted(DATA_ROOT_ALIASES))
def test_data_root_and_its_alias_parse_alike(name):
    parser = parser_of(name)
    required = [a for a in REQUIRED.get(name, []) if a not in ("--data-root", "D")]
    args = parser.parse_args(required + ["--data-root", "/data/x"])
    assert args.data_root == "/data/x"
    alias = DATA_ROOT_ALIASES[name]
    if alias:
        assert parser.parse_args(required + [alias, "/data/x"]) == args
        assert f"{alias} is an older name" in " ".join(parser.format_help().split())
    else:
        assert not {"--davis-root", "--root"} & set(parser.format_help().replace(",", " ").split())


@pytest.mark.parametrize(
    ("flags", "level"), [([], logging.INFO), (["-q"], logging.WARNING), (["-v"], logging.DEBUG)]
)
def test_verbosity_sets_the_package_level_once(package_logger, flags, level):
    parse_job_args(job_parser("a job"), flags)
    parse_job_args(job_parser("a job"), flags)  # a job run twice in one process
    assert package_logger.level == level
    assert sum(isinstance(h, pix2seqd_log._PackageHandler) for h in package_logger.handlers) == 1


def test_records_go_to_stderr_formatted_and_results_stay_on_stdout(package_logger, capsys):
    parse_job_args(job_parser("a job"), ["-q"])
    child = logging.getLogger("pix2seqd.platform.some_module")
    child.info("hidden by -q")
    child.warning("shown: %d", 3)
    print("PQ 0.5")
    out, err = capsys.readouterr()
    assert out == "PQ 0.5\n"
    assert "hidden" not in err
    [line] = err.splitlines()
    assert line.endswith(" WARNING pix2seqd.platform.some_module: shown: 3")


def test_other_libraries_logging_is_left_alone(package_logger):
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    library = logging.getLogger("some_library.module")
    before = library.getEffectiveLevel()
    parse_job_args(job_parser("a job"), ["-v"])
    assert (root.level, root.handlers) == (root_level, root_handlers)
    assert library.getEffectiveLevel() == before


def test_package_level_is_what_workers_get(package_logger):
    pix2seqd_log.configure_logging(logging.DEBUG)
    assert pix2seqd_log.package_level() == logging.DEBUG
    assert pix2seqd_log.level_for(-1) == logging.WARNING
    assert pix2seqd_log.level_for(0) == logging.INFO
    assert pix2seqd_log.level_for(2) == logging.DEBUG


@pytest.mark.parametrize("name", ["train_coco", "train_davis"])
def test_the_training_jobs_take_resume_auto(name):
    """--resume auto (docs/resilience.md): the value training_setup looks for, in --help."""
    parser = parser_of(name)
    assert parser.parse_args(["--resume", "auto"]).resume == RESUME_AUTO
    assert parser.parse_args(["--resume", "runs:/abc"]).resume == "runs:/abc"
    help_text = " ".join(parser.format_help().split())
    assert "'auto': the unfinished run of this command's run name" in help_text
    assert "Refused while another driver trains the run" in help_text
