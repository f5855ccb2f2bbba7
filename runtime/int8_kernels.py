"""Which int8 matrix kernels serve an int8 graph, chosen on the CPU that serves it, not the one that exported.

onnxruntime's fast int8 kernels on x86 CPUs without VNNI add pairs of uint8 x int8 products into saturating
16-bit sums: with 8-bit weights a standard run's image embeddings drift to a mean cosine of 0.93 to fp32.
CPUs that sum int8 products in 32 bits (x86 AVX-512 VNNI, AVX-VNNI, AMX; ARM's dot-product instructions)
compute the exact products fast; elsewhere ``session.x64quantprecision=1`` computes them exactly, at about
half the speed. So the export checks an int8 graph against exact products and records that requirement
(``graphs.<g>.int8_kernels``: ``exact``; ``any`` when its weights cannot saturate the fast kernels, e.g.
7-bit), and the runtime picks the kernels here, at load. ``DAGNN_INT8_KERNELS=fast|exact`` overrides the
choice (for tests and measurements).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import BundleError

REQUIREMENTS = ("exact", "any")
OVERRIDE_ENV = "DAGNN_INT8_KERNELS"
EXACT_ENTRY = {"session.x64quantprecision": "1"}
_X86_FLAGS = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8"}


def requirement(manifest: dict, graph: str, source: str) -> str | None:
    """``exact``, ``any`` or None (not an int8 graph). Bundles from before this field: one served with
    ``session.x64quantprecision`` or with plain 8-bit weights needs exact products (it was checked with
    them, or with fast kernels that were exact where it was exported); 7-bit weights take any kernels."""
    spec = manifest["graphs"][graph]
    value = spec.get("int8_kernels")
    if value is not None:
        if value not in REQUIREMENTS:
            raise BundleError(f"bundle {source}: manifest.json field 'graphs.{graph}.int8_kernels' is {value!r:.40}, "
                              f"not one of {', '.join(REQUIREMENTS)}")
        return value
    if graph != "image_encoder" or spec.get("precision") != "int8":  # the text graph is served as recorded
        return None
    chosen = ((manifest.get("quantization") or {}).get("int8_config") or {}).get("quantizer") or {}
    return "any" if chosen.get("reduce_range") in ("matmul", "all") else "exact"


def cpu_dot_product() -> str | None:
    """The name of this CPU's instructions that sum int8 products without saturating, or None."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    words = set(" ".join(line.split(":", 1)[1] for line in text.splitlines()
                         if line.startswith(("flags", "Features")) and ":" in line).split())
    for flag, name in _X86_FLAGS.items():
        if flag in words:
            return name
    if "asimddp" in words:
        return "ARM dot product"
    if not text:  # not Linux: numpy knows the CPU's features too
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return None
        for key, name in (("AVX512VNNI", "AVX-512 VNNI"), ("ASIMDDP", "ARM dot product")):
            if features.get(key):
                return name
    return None


def choose(manifest: dict, graph: str, source: str) -> tuple[dict, str | None]:
    """(the session config entries that serve ``graph``, why) — ({}, None) for a graph that is not int8."""
    needed = requirement(manifest, graph, source)
    if needed is None:
        return {}, None
    forced = os.environ.get(OVERRIDE_ENV)
    if forced:
        if forced not in ("fast", "exact"):
            raise BundleError(f"{OVERRIDE_ENV} is {forced!r:.40}: use fast or exact")
        return (EXACT_ENTRY if forced == "exact" else {}), f"{forced} kernels ({OVERRIDE_ENV}={forced})"
    if needed == "any":
        return {}, "fast kernels (its weights cannot saturate them on any CPU)"
    found = cpu_dot_product()
    if found:
        return {}, f"fast kernels (this CPU has {found}: they compute exact int8 products)"
    return EXACT_ENTRY, "exact products (session.x64quantprecision=1: this CPU has no VNNI or dot product)"
