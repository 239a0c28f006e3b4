"""Lock files of the images: resolve each `services/<image>/requirements*.in`, check a lock is current, verify an
install. Locks are resolved by uv for linux x86_64 and the base image's Python; on the GPU base (verl and jupyter)
the CUDA stack the base built is resolved against but not emitted, so installing a lock never replaces it.

    python services/locks.py compile [IMAGE ...]   # re-resolve requirements.lock (keeps current pins)
    python services/locks.py check [IMAGE ...]     # exit 1 and print a diff if a lock is stale or unresolvable
    python services/locks.py verify LOCK [--base NAME==VERSION ...]   # in an image: is LOCK installed exactly?

`compile` and `check` need uv (`.venv/bin/uv`, or `UV=/path/to/uv`) and PyPI; `verify` only the standard library.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

SERVICES = Path(__file__).resolve().parent
REPO_ROOT = SERVICES.parent
PLATFORM = "x86_64-manylinux_2_28"
INDEX_URL = "https://pypi.org/simple"
# Resolve as of this instant (uploads after it are invisible), so a re-resolve is reproducible.
# Move it forward deliberately when upgrading, then run `compile`.
EXCLUDE_NEWER = "2026-11-21T00:00:00Z"

# The CUDA stack verlai/verl:vllm024.dev2 built together (torch 2.11.0+cu130, vLLM 0.24.0, flash-attn 2.8.3, ...):
# resolved against, never written to the lock, so installing the lock leaves them as the base has them.
VERL_BASE_OWNED = (
    "torch torchvision torchaudio torchcodec triton vllm flash-attn flashinfer-python flashinfer-cubin "
    "tilelang apache-tvm-ffi torch-c-dlpack-ext humming-kernels quack-kernels tokenspeed-mla "
    "cuda-bindings cuda-core cuda-pathfinder cuda-python cuda-tile cuda-toolkit "
    "nvidia-cublas nvidia-cuda-cccl nvidia-cuda-crt nvidia-cuda-cupti nvidia-cuda-nvcc nvidia-cuda-nvrtc "
    "nvidia-cuda-runtime nvidia-cuda-tileiras nvidia-cudnn-cu13 nvidia-cudnn-frontend nvidia-cufft nvidia-cufile "
    "nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-cutlass-dsl "
    "nvidia-cutlass-dsl-libs-base nvidia-cutlass-dsl-libs-cu13 nvidia-nccl-cu13 nvidia-nvjitlink "
    "nvidia-nvshmem-cu13 nvidia-nvtx nvidia-nvvm"
).split()

# PyPI's builds of these are CUDA builds, which the CPU variants must not install (see IMAGES).
CUDA_ONLY_VISION = ("torchvision", "torchaudio", "torchcodec")


@dataclass(frozen=True)
class ImageLock:
    """How one image's requirements.in is resolved into its requirements.lock."""

    name: str  # IMAGE or IMAGE-cpu: the CPU variant (docker-compose.cpu.yml) of services/IMAGE/
    python: str  # the base image's Python
    base: tuple[str, ...] = ()  # NAME==VERSION the base image provides; constraints, checked by `verify`
    not_emitted: tuple[str, ...] = field(default=())

    cpu = property(lambda self: self.name.endswith("-cpu"))
    folder = property(lambda self: SERVICES / self.name.removesuffix("-cpu"))
    requirements_in = property(lambda self: self.folder / f"requirements{'-cpu' * self.cpu}.in")
    lock = property(lambda self: self.folder / f"requirements{'-cpu' * self.cpu}.lock")


IMAGES = {
    "verl": ImageLock(
        "verl",
        python="3.12",
        base=("torch==2.11.0", "vllm==0.24.0", "flash-attn==2.8.3"),
        not_emitted=tuple(VERL_BASE_OWNED),
    ),
    # The jupyter image is built on the verl image's base: the same torch/CUDA, left to the base the same way.
    "jupyter": ImageLock("jupyter", python="3.12", base=("torch==2.11.0",), not_emitted=tuple(VERL_BASE_OWNED)),
    "mlflow": ImageLock("mlflow", python="3.11"),
    # CPU variants: Debian bookworm's Python 3.11 and PyTorch's CPU build (from LOCAL_WHEELS or its CPU index).
    # PyPI's torchvision/torchaudio/torchcodec are CUDA builds: against the CPU torch they break transformers'
    # Qwen2 import and `from vllm import LLM` (vllm/multimodal/video.py). Nothing on the CPU path needs them.
    "verl-cpu": ImageLock("verl-cpu", python="3.11", not_emitted=CUDA_ONLY_VISION),
    "jupyter-cpu": ImageLock("jupyter-cpu", python="3.11"),
}

LOCAL_WHEELS = Path("/opt/wheels")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def find_uv() -> str:
    """The uv binary: $UV, the repo's .venv, or PATH."""
    for candidate in (os.environ.get("UV"), str(REPO_ROOT / ".venv" / "bin" / "uv"), shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("uv not found: run `make venv` (it installs .venv/bin/uv) or set UV=/path/to/uv")


def compile_command(image: ImageLock, output: Path, constraints: Path | None) -> list[str]:
    """The `uv pip compile` invocation that produces `output` for `image`."""
    cmd = [
        find_uv(),
        "pip",
        "compile",
        str(image.requirements_in.relative_to(REPO_ROOT)),
        "--output-file",
        str(output),
        "--python-version",
        image.python,
        "--python-platform",
        PLATFORM,
        "--index-url",
        INDEX_URL,
        "--exclude-newer",
        EXCLUDE_NEWER,
        "--generate-hashes",
        "--custom-compile-command",
        f"python services/locks.py compile {image.name}",
        "--quiet",
    ]
    if constraints is not None:
        cmd += ["--constraints", str(constraints)]
    if image.cpu:
        if any(LOCAL_WHEELS.glob("torch-*+cpu-*.whl")):
            cmd += ["--find-links", str(LOCAL_WHEELS)]
        else:
            cmd += ["--extra-index-url", TORCH_CPU_INDEX, "--index-strategy", "unsafe-best-match"]
    for name in image.not_emitted:
        cmd += ["--no-emit-package", name]
    return cmd


def resolve(image: ImageLock, output: Path) -> None:
    """Resolve `image` into `output`; the pins already in `output` are kept where they still resolve."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints = None
        if image.base:
            constraints = Path(tmp) / "base-image.txt"
            constraints.write_text("".join(f"{pin}\n" for pin in image.base))
        # Only our own flags decide the result: no index or resolver settings leak in from the environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") or k == "UV_CACHE_DIR"}
        proc = subprocess.run(
            compile_command(image, output, constraints), cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
    if proc.returncode != 0:
        raise SystemExit(f"{image.requirements_in}: uv could not resolve it:\n{proc.stderr.strip()}")


def write_preferences(lock: Path, output: Path) -> None:
    """The pins of `lock` without its hashes: uv keeps these versions but fetches every hash from the index anew
    (given the hashes, it would copy them over unchecked)."""
    output.write_text("".join(f"{name}=={version}\n" for name, version in read_pins(lock).items()))


def relock(names: list[str], write: bool) -> bool:
    """Re-resolve each lock (current pins preferred) into a temp file, then replace the lock with it (`write`) or
    compare them; True when every lock came out unchanged or was written."""
    from scripts.lib.atomic import atomic_write  # not at the top: `verify` runs in images without the repo

    ok = True
    for name in names:
        image = IMAGES[name]
        if not write and not image.lock.exists():
            log.error("%s is missing: run `python services/locks.py compile %s`", image.lock, name)
            ok = False
            continue
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "requirements.lock"
            if image.lock.exists():
                write_preferences(image.lock, fresh)
            resolve(image, fresh)
            if write:  # nothing half-written: replaced only after success
                atomic_write(image.lock, fresh.read_bytes())
                log.info("wrote %s", image.lock.relative_to(REPO_ROOT))
                continue
            old, new = image.lock.read_text().splitlines(), fresh.read_text().splitlines()
        if old != new:
            ok = False
            diff = "\n".join(difflib.unified_diff(old, new, str(image.lock), "re-resolved", lineterm="", n=1))
            log.error("%s is stale (requirements.in changed, or a pin no longer resolves):\n%s", image.lock, diff)
        else:
            log.info("%s is current", image.lock.relative_to(REPO_ROOT))
    return ok


PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def read_pins(lock: Path) -> dict[str, str]:
    """NAME -> VERSION for every `name==version` line of a lock file (names normalized as in PEP 503)."""
    pins = {}
    for line in lock.read_text().splitlines():
        if match := PIN.match(line.strip()):
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """NAME -> VERSION of what `import` would load: the first distribution of each name on sys.path.

    In the verl image a virtualenv with --system-site-packages shadows the base image's older copies.
    """
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        if name := dist.metadata["Name"]:
            found.setdefault(normalize(name), dist.version)
    return found


def same_version(installed: str, pinned: str) -> bool:
    """PEP 440 `==` as pip applies it: a local label (`2.11.0+cu130`) satisfies a pin without one."""
    return installed == pinned or ("+" not in pinned and installed.split("+", 1)[0] == pinned)


def verify(lock: Path, base: list[str]) -> list[str]:
    """Problems with the running environment: every pin of `lock` and every `base` pin must be installed exactly."""
    have = installed_versions()
    wanted = read_pins(lock)
    for pin in base:
        name, _, version = pin.partition("==")
        wanted[normalize(name)] = version
    problems = []
    for name, version in sorted(wanted.items()):
        if name not in have:
            problems.append(f"{name}=={version} is not installed")
        elif not same_version(have[name], version):
            problems.append(f"{name}=={version} expected, {have[name]} installed")
    return problems


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("compile", "check"):
        p = sub.add_parser(command)
        p.add_argument("images", nargs="*", metavar="IMAGE", help=f"one of {', '.join(IMAGES)} (default: all)")
    p = sub.add_parser("verify", help="check that LOCK is installed exactly in this Python environment")
    p.add_argument("lock", type=Path)
    p.add_argument("--base", nargs="*", default=[], metavar="NAME==VERSION", help="pins the base image provides")
    args = parser.parse_args(argv)

    if args.command == "verify":
        problems = verify(args.lock, args.base)
        for problem in problems:
            log.error("%s: %s", args.lock, problem)
        if problems:
            log.error("%d package(s) differ from %s: the image does not match its lock", len(problems), args.lock)
            return 1
        log.info("%s: all %d pins installed exactly", args.lock, len(read_pins(args.lock)) + len(args.base))
        return 0
    names = args.images or list(IMAGES)
    if unknown := sorted(set(names) - set(IMAGES)):
        parser.error(f"unknown image(s) {', '.join(unknown)}: choose from {', '.join(IMAGES)}")
    return 0 if relock(names, write=args.command == "compile") else 1


if __name__ == "__main__":
    sys.exit(main())
