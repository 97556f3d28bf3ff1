"""Which accelerator this machine has, and which PyTorch build (package index) matches it.

Detection runs the vendors' own tools (`nvidia-smi`, `rocminfo`); the choice is a pure
function of what was found, so every rule is tested without the hardware.
"""

from __future__ import annotations

import os
import platform as platform_module
import shutil
import subprocess
from dataclasses import dataclass

from shared.paths import current_platform

from . import InstallError

PYTORCH_INDEX = "https://download.pytorch.org/whl"
# CUDA 12.8 builds carry kernels for Turing (7.5) up to Blackwell; older cards need the CUDA 12.6
# builds, the last ones with Maxwell, Pascal and Volta kernels.
CUDA_NEW, CUDA_OLD = "cu128", "cu126"
CUDA_NEW_MIN_CAPABILITY = (7, 5)
CUDA_MIN_CAPABILITY = (5, 0)
# Oldest drivers that run these builds (CUDA 12 minor-version compatibility starts at 525).
CUDA_NEW_MIN_DRIVER = 570
CUDA_OLD_MIN_DRIVER = 525
ROCM = "rocm6.4"
TORCH_KINDS = ("cpu", "cuda", "rocm", "mps")


@dataclass(frozen=True)
class Accelerator:
    """What was found: kind is "nvidia", "amd", "apple" or "none"."""

    kind: str
    name: str = ""
    capability: tuple[int, int] | None = None
    driver: str = ""


@dataclass(frozen=True)
class TorchBuild:
    """A PyTorch build: kind (cpu/cuda/rocm/mps), its wheel tag, and the index that serves it
    (None: the default index, PyPI)."""

    kind: str
    tag: str
    index_url: str | None
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"PyTorch {self.tag} ({self.index_url or 'PyPI'})"


# ---- parsing the vendors' tools (pure) ----


def parse_nvidia_smi(text: str) -> list[Accelerator]:
    """Rows of `nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader`,
    or of `name,driver_version` from drivers too old to report the compute capability."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) not in (2, 3) or not parts[0]:
            continue
        name, cap, driver = (parts[0], "", parts[1]) if len(parts) == 2 else parts
        major, _, minor = cap.partition(".")
        capability = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
        gpus.append(Accelerator("nvidia", name=name, capability=capability, driver=driver))
    return gpus


def parse_rocminfo(text: str) -> list[str]:
    """The gfx architectures of the GPU agents listed by `rocminfo`."""
    names = []
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "Name" and value.startswith("gfx") and value not in names:
            names.append(value)
    return names


def driver_major(driver: str) -> int | None:
    head = driver.split(".")[0]
    return int(head) if head.isdigit() else None


# ---- choosing a build (pure) ----


def _cuda(accel: Accelerator) -> TorchBuild:
    notes = []
    cap, driver = accel.capability, driver_major(accel.driver)
    if cap is not None and cap < CUDA_MIN_CAPABILITY:
        raise InstallError(
            f"{accel.name} (compute capability {cap[0]}.{cap[1]}) is too old for current PyTorch builds",
            "install with --torch cpu (slow), or use a GPU of the GTX 900 series or newer",
        )
    tag = CUDA_NEW if cap is None or cap >= CUDA_NEW_MIN_CAPABILITY else CUDA_OLD
    if tag == CUDA_NEW and driver is not None and driver < CUDA_NEW_MIN_DRIVER:
        if cap is not None and cap >= (12, 0):
            notes.append(
                f"the NVIDIA driver {accel.driver} is too old for {accel.name}: "
                f"update it to {CUDA_NEW_MIN_DRIVER} or newer (https://www.nvidia.com/drivers)"
            )
        else:
            tag = CUDA_OLD
    if driver is not None and driver < CUDA_OLD_MIN_DRIVER:
        notes.append(
            f"the NVIDIA driver {accel.driver} is older than {CUDA_OLD_MIN_DRIVER}: PyTorch will not "
            "see the GPU until it is updated (https://www.nvidia.com/drivers)"
        )
    return TorchBuild("cuda", tag, f"{PYTORCH_INDEX}/{tag}", tuple(notes))


def _cpu(platform: str, notes: tuple[str, ...] = ()) -> TorchBuild:
    # On Linux the PyPI wheel is the multi-GB CUDA build; PyTorch's own index has a CPU-only one.
    # macOS wheels on PyPI are CPU/MPS builds already.
    index = None if platform == "macos" else f"{PYTORCH_INDEX}/cpu"
    return TorchBuild("cpu", "cpu", index, notes)


def choose_torch(platform: str, accel: Accelerator, requested: str = "auto") -> TorchBuild:
    """The build for this platform and accelerator; `requested` (cpu/cuda/rocm/mps) overrides
    the detection but not what the platform can run."""
    if requested not in ("auto", *TORCH_KINDS):
        raise InstallError(
            f"--torch must be one of auto, {', '.join(TORCH_KINDS)}, not {requested!r}",
            "run with --torch auto to pick the build for the detected hardware",
        )
    kind = requested
    if kind == "auto":
        kind = {"nvidia": "cuda", "amd": "rocm", "apple": "mps"}.get(accel.kind, "cpu")
        if kind == "rocm" and platform != "linux":
            note = "PyTorch has ROCm builds for Linux only: this install runs on the CPU (slow)"
            return _cpu(platform, (note,))
    if kind == "cpu":
        return _cpu(platform)
    if kind == "cuda":
        if platform == "macos":
            raise InstallError("CUDA is not available on macOS", "use --torch mps (Apple Silicon) or cpu")
        return _cuda(accel if accel.kind == "nvidia" else Accelerator("nvidia"))
    if kind == "rocm":
        if platform != "linux":
            raise InstallError("PyTorch has ROCm builds for Linux only", "use --torch cpu on this system")
        return TorchBuild("rocm", ROCM, f"{PYTORCH_INDEX}/{ROCM}")
    if platform != "macos":
        raise InstallError("MPS is the GPU backend of Apple Silicon Macs only", "use --torch cpu or cuda")
    return TorchBuild("mps", "mps", None)


# ---- detection (runs tools) ----


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _detect_nvidia() -> Accelerator | None:
    query = "--format=csv,noheader"
    text = _run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", query])
    if text is None:
        # Drivers older than 510 cannot report compute_cap.
        text = _run(["nvidia-smi", "--query-gpu=name,driver_version", query])
    gpus = parse_nvidia_smi(text or "")
    if not gpus:
        return None
    # The newest card decides; the build then also runs on the others unless they are much older.
    return max(gpus, key=lambda gpu: gpu.capability or (0, 0))


def _detect_amd() -> Accelerator | None:
    # /dev/kfd is the ROCm kernel interface; PyTorch's ROCm wheels bring the rest of ROCm along.
    if not os.path.exists("/dev/kfd"):
        return None
    archs = parse_rocminfo(_run(["rocminfo"]) or "")
    return Accelerator("amd", name=", ".join(archs) or "AMD GPU (ROCm)")


def _detect_apple() -> Accelerator | None:
    if platform_module.machine() == "arm64":
        return Accelerator("apple", name="Apple Silicon")
    if _run(["sysctl", "-n", "hw.optional.arm64"]) == "1\n":
        raise InstallError(
            "this Python runs under Rosetta (x86_64) on an Apple Silicon Mac",
            "run the installer with an arm64 Python (python.org's universal installer or Homebrew)",
        )
    return None


def detect_accelerator(platform: str | None = None) -> Accelerator:
    platform = platform or current_platform()
    if platform == "macos":
        return _detect_apple() or Accelerator("none")
    found = _detect_nvidia() or (_detect_amd() if platform == "linux" else None)
    return found or Accelerator("none")
