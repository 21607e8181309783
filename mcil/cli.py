"""`mcil` command line: the only seam between the pipeline (Snakemake) and the library.

Each sub-command lives in the module that implements it, as two functions::

    def configure_parser(p: argparse.ArgumentParser) -> None   # add the sub-command's arguments
    def run_cli(args: argparse.Namespace) -> int               # do the work, return an exit code

Modules are imported only when their sub-command runs, so `mcil --help` and every job start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

__all__ = ["main", "entry"]

# sub-command → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("mcil.data.synth", "write the procedural audio-visual-text dataset synav (PNG + WAV + manifest)"),
    "prepare": ("mcil.data.prepare", "turn ImageNet+ESC-50 or miniARIC folders into an mcil manifest"),
    "cache": ("mcil.data.cache", "decode a dataset once into the memory-mapped tensor cache"),
    "pretrain": ("mcil.backbones.pretrain", "contrastively pre-train the tiny tri-modal backbone on synav"),
    "calibrate": ("mcil.calibrate", "the benchmark's calibration table: zero-shot, probes, r and gate rates of data + frozen backbone"),
    "train": ("mcil.train", "run one configuration (all tasks) and write result.json"),
    "aggregate": ("mcil.report.aggregate", "collect result.json files into tables, figures and claims.md"),
    "studies": ("mcil.report.studies", "the validation studies: check runs into tables, figures and results/checks/claims.md"),
    "bench": ("mcil.bench", "measure training throughput: optimised path vs official-style reference loop"),
    "methods": ("mcil.learners.listing", "list registered methods and presets"),
    "tune": ("mcil.tune", "choose default settings on the validation split (never on test)"),
    "lock": ("mcil.lock", "check the environment against envs/requirements.lock, or refresh the lock"),
}


class _LazyHelp(argparse.HelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcil", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def configure_logging(verbose: bool = False) -> None:
    """The one log format of every mcil process (the CLI, and `mcil tune --jobs` workers)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    # Parse only the global part first; the sub-command's own parser handles the rest.
    verbose = "-v" in argv[:1] or "--verbose" in argv[:1]
    if verbose:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    configure_logging(verbose)
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mcil {name}", description=COMMANDS[name][1])
    module.configure_parser(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run_cli(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("mcil").warning("interrupted")
        return 130
    except Exception as exc:  # user-facing errors: one clear line, not a traceback
        from mcil.errors import UserError

        if isinstance(exc, UserError):
            logging.getLogger("mcil").error("%s", exc)
            return 2
        raise


def entry() -> None:
    """The ``mcil`` console script: :func:`main`, then exit without the interpreter's teardown.

    Tearing down a process that imported torch takes ≈ 1 s (``python -c "import torch"`` 3.7 s,
    2.6 s when it ends with ``os._exit``), paid again by each of the pipeline's ~120 jobs. Every
    output is written atomically and closed, and worker pools are joined, before ``main``
    returns, so only logging and the standard streams need flushing. An exception still ends
    the normal way, with its traceback.
    """
    rc = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
