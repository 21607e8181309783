"""The dependency lock: ``envs/requirements.lock``, its hash, and the check that an environment matches it.

Why a lock: torch and the packages compiled against it (torchaudio, torchvision) are ABI-coupled, and a
patch release of one (torchaudio 2.11.1) stopped loading against the other overnight. pyproject.toml pins
that coupled set exactly; the lock fixes *every* transitive version for Python 3.11, so a fresh install
today gives the environment the tests ran in.

The lock is written by ``uv pip compile`` (``mcil lock refresh``): uv resolves one universal file
(markers per platform) in seconds without installing anything, and needs no project-specific plugin.

    mcil lock check     # installed environment vs the lock, plus `pip check`; exit 1 on any drift
    mcil lock refresh   # re-resolve the lock from pyproject.toml (needs `pip install uv`), rewrite envs/mcil.yaml
    mcil lock hash      # the lock's sha256, as recorded in result.json provenance
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mcil.atomic import atomic_write_text
from mcil.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "LOCK_RELPATH", "CONDA_ENV_RELPATH", "REFRESH_ARGS", "conda_env_text", "Pin", "Drift", "repo_root", "lock_path", "lock_sha256", "parse_lock",
    "applicable_pins", "installed_versions", "compare", "refresh_command",
]

LOCK_RELPATH = "envs/requirements.lock"
CONDA_ENV_RELPATH = "envs/mcil.yaml"
# What `mcil lock refresh` runs (after `uv`), from the repository root. uv writes this command into the
# lock's header; a test checks that the committed lock was made by exactly this command.
REFRESH_ARGS = ("pip", "compile", "pyproject.toml", "--extra", "test", "--extra", "slurm", "--universal",
                "-o", LOCK_RELPATH)
# Tools of the environment itself: never in the lock, never drift.
IGNORED = frozenset({"pip", "setuptools", "wheel", "mcil", "uv", "pip-tools", "build", "pkg-resources"})


def normalise(name: str) -> str:
    """PEP 503 name: ``Open_Clip.Torch`` → ``open-clip-torch`` (packaging's canonical form)."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def repo_root() -> Path:
    """The checkout this package was installed from (editable installs; ``envs/`` sits beside ``mcil/``)."""
    return Path(__file__).resolve().parents[1]


def lock_path(root: Path | None = None) -> Path | None:
    """The lock file of the checkout, or None where mcil is installed without its repository."""
    path = (root or repo_root()) / LOCK_RELPATH
    return path if path.is_file() else None


def lock_sha256(path: Path | None = None) -> str | None:
    """sha256 of the lock file's bytes (None when there is no lock), recorded in result.json provenance."""
    path = path or lock_path()
    if path is None:
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Pin:
    """One ``name==version ; marker`` line of the lock."""

    name: str
    version: str
    marker: str | None = None


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)\s*(?:;\s*(.+))?$")


def parse_lock(text: str, source: str = LOCK_RELPATH) -> list[Pin]:
    """Pins of a pip-style lock; comments, blank lines and option lines (``--index-url``) are skipped.

    A requirement that is not an exact ``==`` pin is an error: a lock that allows ranges locks nothing.
    """
    pins = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("-"):
            continue
        m = _PIN.match(line)
        if m is None:
            raise UserError(f"{source}:{number}: {raw.strip()!r} is not an exact 'name==version' pin; "
                            f"regenerate the lock with `mcil lock refresh`")
        pins.append(Pin(normalise(m.group(1)), m.group(2), m.group(3)))
    return pins


def applicable_pins(pins: list[Pin], environment: dict[str, str] | None = None) -> dict[str, str]:
    """name → version of the pins whose marker holds in ``environment`` (default: this interpreter)."""
    from packaging.markers import Marker

    out = {}
    for pin in pins:
        if pin.marker is None or Marker(pin.marker).evaluate(environment):
            out[pin.name] = pin.version
    return out


def installed_versions() -> dict[str, str]:
    """name → version of every distribution importable in this interpreter."""
    out = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(normalise(name), dist.version)
    return out


@dataclass
class Drift:
    """Where an environment differs from the lock. ``extra`` is information only: a user's own tools
    (jupyter, a profiler) beside ours do not change what the lock fixes."""

    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)   # (name, locked, installed)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    def describe(self) -> str:
        lines = []
        for name, want, have in self.mismatched:
            lines.append(f"  {name}: installed {have}, lock says {want}")
        for name in self.missing:
            lines.append(f"  {name}: not installed")
        return "\n".join(lines)


def _same_version(locked: str, installed: str) -> bool:
    """Equal public versions; a local label (``2.11.0+cpu`` for ``2.11.0``) is the same release built for
    another device, with the same ABI and API."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(locked).public == Version(installed).public
    except InvalidVersion:
        return locked == installed


def compare(locked: dict[str, str], installed: dict[str, str]) -> Drift:
    """Drift of ``installed`` against ``locked`` (both name → version, names normalised)."""
    drift = Drift()
    for name, want in sorted(locked.items()):
        have = installed.get(name)
        if have is None:
            drift.missing.append(name)
        elif not _same_version(want, have):
            drift.mismatched.append((name, want, have))
    drift.extra = sorted(n for n in installed if n not in locked and n not in IGNORED)
    return drift


def refresh_command(uv: str = "uv") -> list[str]:
    return [uv, *REFRESH_ARGS]


def conda_env_text(pins: list[Pin]) -> str:
    """envs/mcil.yaml: the conda environment of `snakemake --use-conda`, with the lock's pins inline.

    Inline rather than ``-r requirements.lock``: Snakemake copies the YAML into .snakemake/conda/ before
    creating the environment (a relative ``-r`` no longer resolves there) and keys the environment by the
    YAML's content, so a changed lock must change this file to give a new environment.
    """
    lines = [
        "# The conda environment of every rule (snakemake --use-conda); by hand:",
        "#   conda env create -f envs/mcil.yaml && conda activate mcil && pip install -e . --no-deps",
        f"# Generated from {LOCK_RELPATH} by `mcil lock refresh`: do not edit; a test checks the two agree.",
        "name: mcil",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
    ]
    for pin in pins:
        req = f"{pin.name}=={pin.version}" + (f" ; {pin.marker}" if pin.marker else "")
        lines.append(f"      - {json.dumps(req)}")
    return "\n".join(lines) + "\n"


def _pip_check() -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check", "refresh", "hash"], help="what to do (module docstring)")
    p.add_argument("--lock", default=None, help=f"lock file (default: {LOCK_RELPATH} of this checkout)")


def _resolve_lock(arg: str | None) -> Path:
    path = Path(arg) if arg else lock_path()
    if path is None or not path.is_file():
        raise UserError(f"no lock file at {arg or repo_root() / LOCK_RELPATH}: run from a checkout of mcil "
                        f"(pip install -e .), or pass --lock PATH")
    return path


def run_cli(args: argparse.Namespace) -> int:
    if args.action == "refresh":
        uv = shutil.which("uv")
        if uv is None:
            raise UserError("`mcil lock refresh` needs uv: pip install uv (or pip install -e '.[lock]')")
        cmd = refresh_command(uv)
        log.info("in %s: %s", repo_root(), " ".join(cmd))
        rc = subprocess.run(cmd, cwd=repo_root()).returncode
        if rc == 0:
            pins = parse_lock((repo_root() / LOCK_RELPATH).read_text())
            atomic_write_text(repo_root() / CONDA_ENV_RELPATH, conda_env_text(pins))
            log.info("wrote %s (%d pins)", CONDA_ENV_RELPATH, len(pins))
        return rc
    path = _resolve_lock(args.lock)
    if args.action == "hash":
        sys.stdout.write(f"{lock_sha256(path)}  {path}\n")
        return 0
    drift = compare(applicable_pins(parse_lock(path.read_text(), str(path))), installed_versions())
    pip_ok, pip_text = _pip_check()
    if drift.extra:
        log.info("not in the lock (ignored): %s", ", ".join(drift.extra))
    if not pip_ok:
        log.error("`pip check` reports broken requirements:\n%s", pip_text)
    if not drift.ok:
        log.error("the installed environment differs from %s:\n%s\nReinstall from the lock: "
                  "pip install -r %s -e '.[test]'  (or refresh the lock: mcil lock refresh)",
                  path, drift.describe(), LOCK_RELPATH)
    if drift.ok and pip_ok:
        log.info("environment matches %s (sha256 %s); pip check: ok", path, lock_sha256(path)[:12])
        return 0
    return 1
