"""This machine as far as a verdict, a figure or a device choice depends on it: its CPU's name and
the x86 features that change what 8-bit and bf16 arithmetic computes (VNNI) or how fast (AVX-512,
AMX); and how many NVIDIA GPUs this process may use, so that `--device cuda:N` is checked when the
command line is read, before minutes of loading; and the memory it has free (whether export may hold
two files at once).

Torch-free and read from /proc/cpuinfo (Linux); elsewhere the name is platform.processor() and no
features are known. Every stage may import it (export names the CPU it judged int8 on; verify's
records are keyed by it).
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path

# The flags (as /proc/cpuinfo spells them) worth naming next to a figure, in the order shown.
SHOWN_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor /proc/cpuinfo lists."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            found.setdefault(key.strip(), value.strip())
            if "model name" in found and "flags" in found:
                break
    return found.get("model name") or platform.processor() or platform.machine(), frozenset(found.get("flags", "").split())


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+")."""
    return _cpuinfo()[0]


def cpu_features() -> frozenset[str]:
    """The CPU's feature flags (empty where they cannot be read)."""
    return _cpuinfo()[1]


def describe_cpu() -> str:
    """The CPU with the features that matter for reduced precision: "AMD EPYC (avx2; no VNNI)"."""
    flags = cpu_features()
    if not flags:
        return cpu_name()
    shown = [f for f in SHOWN_FEATURES if f in flags]
    # VNNI multiplies 8-bit values into 32-bit sums directly; without it, x86 8-bit dot products
    # (vpmaddubsw) add pairs of products into a 16-bit intermediate that saturates for full-range int8 weights.
    vnni = "" if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "; no VNNI"
    return f"{cpu_name()} ({', '.join(shown) or 'no AVX2'}{vnni})"


# (limit, usage) files of this process's memory cgroup: v2, then v1 (a container's limit, which
# /proc/meminfo does not show: it reports the host's memory)
CGROUP_MEMORY = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


# An artificial limit on the memory a ptx process may use, in bytes or with a unit ("6G", "512M"): what
# a smaller machine or a container would leave, so that the memory plan (infer/runtime/memory_plan.py)
# can be tried, and tested, on a big one.
MEMORY_LIMIT_ENV = "PTX_MEMORY_LIMIT"
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_limit() -> int | None:
    """PTX_MEMORY_LIMIT in bytes, or None where it is unset; a malformed value is one PtxError line."""
    from ptx.errors import PtxError

    given = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not given:
        return None
    number, unit = given.upper().rstrip("IB"), ""
    if number and number[-1] in UNITS:
        number, unit = number[:-1], number[-1]
    try:
        return int(float(number) * UNITS[unit])
    except ValueError:
        raise PtxError(f"{MEMORY_LIMIT_ENV}={given}: give bytes or a size such as 6G or 512M") from None


def resident_memory() -> int:
    """The bytes of memory this process holds now (its resident set; 0 where /proc cannot say)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def available_memory() -> int | None:
    """The bytes of memory this process can have without swapping: the kernel's MemAvailable
    (/proc/meminfo, Linux), or less where a container's memory limit leaves less, or PTX_MEMORY_LIMIT
    less what the process holds already; None where none of them is known."""
    found = []
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
        found += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    for limit_file, usage_file in CGROUP_MEMORY:
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit != "max":  # v2 says max where there is no limit; v1 a huge number, which min() passes over
                found.append(int(limit) - int(Path(usage_file).read_text()))
            break
    limit = memory_limit()
    if limit is not None:
        found.append(max(0, limit - resident_memory()))
    return min(found) if found else None


NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the Linux driver manages


def visible_gpus() -> int:
    """The GPUs the driver lists, as few as CUDA_VISIBLE_DEVICES leaves visible (0 without a driver)."""
    try:
        count = sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip() and not v.strip().startswith("-")]))
    return count


def missing_gpu(index: int) -> str | None:
    """Why GPU ``index`` (cuda:N) cannot be used here, or None when it is there."""
    count = visible_gpus()
    if index < count:
        return None
    if count == 0:
        return f"cuda:{index}: this machine has no NVIDIA GPU that CUDA can use; use --device cpu"
    listed = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
    return f"cuda:{index}: no such GPU; this machine has {count} ({listed})"
