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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or `taskset` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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


# A memory cgroup's files, per version: (its limit, its usage, the key of memory.stat whose page cache the kernel
# takes back before it counts the limit reached: inactive file pages, reclaimed first; v1's total_ counts the
# cgroups below too, as its usage does). v1 says "no limit" with a number near 2^63.
CGROUP_FILES = {2: ("memory.max", "memory.current", "inactive_file"),
                1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}
NO_LIMIT_V1 = 1 << 62


def _memory_cgroups(root: Path) -> list[tuple[int, Path, Path]]:
    """(version, this process's memory cgroup folder, the folder of its hierarchy's mount) for each memory
    hierarchy the process is in: v2's unified one (where it has the memory controller) first, then v1's. Read
    from /proc/self/cgroup (the process's path in each hierarchy) and /proc/self/mountinfo (where each is
    mounted, and which of its paths the mount shows: a container sees its own cgroup as the mount's root)."""
    try:
        cgroup, mountinfo = ((root / "proc/self" / name).read_text().splitlines() for name in ("cgroup", "mountinfo"))
    except OSError:
        return []
    paths = [line.split(":", 2) for line in cgroup if line.count(":") >= 2]
    mounts = [line.split(" - ") for line in mountinfo if " - " in line]
    found = []
    for before, after in mounts:
        fields, (fstype, _, options, *_) = before.split(), after.split() + ["", "", ""]
        version = 2 if fstype == "cgroup2" else 1 if fstype == "cgroup" and "memory" in options.split(",") else 0
        if not version or len(fields) < 5:
            continue
        mounted, at = fields[3], root / fields[4].lstrip("/")
        path = next((p for hid, controllers, p in paths if (version == 2 and hid == "0" and not controllers)
                     or (version == 1 and "memory" in controllers.split(","))), None)
        if path is None or (version == 2 and "memory" not in _words(at / "cgroup.controllers")):
            continue  # a unified hierarchy without the memory controller (a hybrid host: memory is v1's)
        inside = path[len(mounted):] if path.startswith(mounted) else path  # the mount's own part of the path
        folder = at / inside.strip("/")
        found.append((version, folder if folder.is_dir() else at, at))
    return sorted(found, key=lambda f: -f[0])


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _cgroup_room(folder: Path, version: int) -> int | None:
    """limit - (usage - inactive file cache) of one cgroup folder, or None where it sets no limit (or says none)."""
    limit_file, usage_file, inactive_key = CGROUP_FILES[version]
    try:
        limit = (folder / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= NO_LIMIT_V1:
            return None
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    inactive = 0
    with contextlib.suppress(OSError, ValueError):
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines()
                    if len(line.split()) == 2)
        inactive = int(stat.get(inactive_key, stat.get("inactive_file", 0)))
    return max(0, int(limit) - (usage - inactive))


def cgroup_room(root: Path = Path("/")) -> int | None:
    """The bytes this process's memory cgroups leave it: the least, over its own cgroup and every one above it
    up to its hierarchy's mount (a limit may be set at any level: a container's, a systemd slice's, a job's), of
    limit - (usage - inactive file cache), since the kernel reclaims that cache before it counts a limit reached;
    None where no cgroup limits it. ``root``: where / is (a fake tree, in the tests)."""
    for version, folder, top in _memory_cgroups(root):
        rooms = []
        while True:
            room = _cgroup_room(folder, version)
            rooms += [room] if room is not None else []
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
        if rooms:
            return min(rooms)
    return None


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
    (/proc/meminfo, Linux), or less where its memory cgroups leave less (``cgroup_room``: a container's
    limit, which /proc/meminfo does not show), or PTX_MEMORY_LIMIT less what the process holds already; None
    where none of them is known."""
    found = []
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
        found += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    room = cgroup_room()
    if room is not None:
        found.append(room)
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
