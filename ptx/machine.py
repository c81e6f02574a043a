"""This machine's CPU as far as a verdict or a figure depends on it: its name, and the x86 features
that change what 8-bit and bf16 arithmetic computes (VNNI) or how fast (AVX-512, AMX).

Torch-free and read from /proc/cpuinfo (Linux); elsewhere the name is platform.processor() and no
features are known. Every stage may import it (export names the CPU it judged int8 on; verify's
records are keyed by it).
"""
from __future__ import annotations

import functools
import platform

# The flags (as /proc/cpuinfo spells them) worth naming next to a figure, in the order shown.
SHOWN_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor /proc/cpuinfo lists."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                found.setdefault(key.strip(), value.strip())
                if "model name" in found and "flags" in found:
                    break
    except OSError:
        pass
    return found.get("model name") or platform.processor() or platform.machine(), frozenset(found.get("flags", "").split())


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+")."""
    return _cpuinfo()[0]


def cpu_features() -> frozenset[str]:
    """The CPU's feature flags (empty where they cannot be read)."""
    return _cpuinfo()[1]


def has_int8_dot_product() -> bool | None:
    """Whether the CPU multiplies 8-bit values into 32-bit sums directly (VNNI). Without it, x86
    8-bit dot products (vpmaddubsw) add pairs of products into a 16-bit intermediate that saturates
    for full-range int8 weights. None where the flags cannot be read (not Linux x86)."""
    flags = cpu_features()
    if not flags:
        return None
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def describe_cpu() -> str:
    """The CPU with the features that matter for reduced precision: "AMD EPYC (avx2; no VNNI)"."""
    flags = cpu_features()
    if not flags:
        return cpu_name()
    shown = [f for f in SHOWN_FEATURES if f in flags]
    vnni = "" if has_int8_dot_product() else "; no VNNI"
    return f"{cpu_name()} ({', '.join(shown) or 'no AVX2'}{vnni})"
