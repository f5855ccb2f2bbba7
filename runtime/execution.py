"""How the runtime uses the machine: onnxruntime execution providers and a bounded thread count."""
from __future__ import annotations

import os

from .errors import InputError, positive_int

GPU_PROVIDERS = ("CUDAExecutionProvider",)
THREADS_ENV = "DAGNN_FORCE_THREADS"


def check_threads(threads, force: bool = False, *, option: str = "threads", force_option: str = "force=True") \
        -> int | None:
    """A thread count for onnxruntime: ``None`` (its own choice) or 1 … the number of cores. More threads than
    cores only adds contention (2000 threads ran for minutes); ``force=True`` or ``DAGNN_FORCE_THREADS=1``
    allows it for experiments, up to 1024. ``option``/``force_option``: how messages name the two (the CLI
    says ``--threads`` and ``--force-threads``)."""
    if threads is None:
        return None
    threads = positive_int(threads, option)
    cores = usable_cores()
    forced = force or os.environ.get(THREADS_ENV, "").strip().lower() in ("1", "true", "yes")
    limit = 1024 if forced else cores
    if threads > limit:
        hint = "" if forced else f" ({force_option} or {THREADS_ENV}=1 allows up to 1024)"
        raise InputError(f"{option}={int(threads)} is more than the {limit} "
                         f"{'allowed' if forced else 'cores of this machine'}{hint}")
    return int(threads)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and ``taskset`` narrow), not
    the machine's count: the default size of onnxruntime's and the image decoders' thread pools."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_providers(providers="auto") -> list:
    """``"auto"``: CUDA when onnxruntime-gpu sees a GPU build, CPU otherwise (TensorRT builds an engine per
    shape and takes minutes, so it is only used when asked for explicitly). Or a list of provider names.
    onnxruntime is imported here, when a bundle loads, not with this module: ``Searcher.open`` checks the
    threads first and opens the indexes in a second thread while the import runs."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None or providers == "auto":
        return [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise InputError(f"execution providers {unknown or names} are not available in this onnxruntime "
                         f"(available: {', '.join(available)})")
    return list(providers)
