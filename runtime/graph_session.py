"""An onnxruntime session for one graph of a verified bundle, built the same way wherever the runtime (or a
bench) serves that graph: the bundle's recorded session settings, the verified graph bytes, and its weights
file's tensors handed over as arrays (format 3; see ``graph_weights``)."""
from __future__ import annotations

import os

from . import int8_kernels
from .bundle import MANIFEST, Bundle, session_config
from .errors import BundleError

# Where onnxruntime would look for external data that the manifest does not supply: a graph loaded from
# bytes otherwise resolves such references against the working directory. Nothing can exist below the null
# device, so a graph can only ever use the tensors the runtime verified and handed over.
NO_EXTERNAL_FOLDER = os.devnull


def graph_session(bundle: Bundle, graph: str, *, threads: int, providers, weights: dict | None = None):
    """A session of ``graph`` with ``threads`` intra-op threads. ``weights``: ``bundle.read_weights(graph)``
    when the caller already holds it (two sessions of one graph then share one copy in memory)."""
    import onnxruntime as ort  # imported when a bundle loads (see ``execution.resolve_providers``)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # onnxruntime's own warnings would otherwise go to stderr unasked
    for k, v in session_entries(bundle, graph).items():
        opts.add_session_config_entry(k, v)
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", NO_EXTERNAL_FOLDER)
    data = bundle.read_graph(graph)
    weights = bundle.read_weights(graph) if weights is None else weights
    if weights:
        opts.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()])
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        name = bundle.manifest["graphs"][graph]["file"]
        raise BundleError(f"bundle {bundle.source}: onnxruntime cannot load {name!r} ({exc})") from exc
    sess.dagnn_weights = weights  # onnxruntime reads these arrays in place: they must live as long as it
    return sess


def session_entries(bundle: Bundle, graph: str) -> dict:
    """The onnxruntime config entries ``graph`` is served with: those its manifest records (checked at load),
    with an int8 graph's kernels chosen for this CPU (``int8_kernels``), not kept from the exporting one."""
    entries = session_config(bundle.manifest, graph, bundle.source)
    chosen, _ = int8_kernels.choose(bundle.manifest, graph, bundle.source)
    if int8_kernels.requirement(bundle.manifest, graph, bundle.source) is not None:
        entries = {k: v for k, v in entries.items() if k not in int8_kernels.EXACT_ENTRY}
    return {**entries, **chosen}


def check_signature(bundle: Bundle, sess, g: str, dtype: str, in_shape: list, d: int, c: int) -> None:
    """Refuse a graph whose input or outputs differ from what its manifest entry and the bundle promise, with
    one line naming the graph, before a caller feeds it (onnxruntime's own error would come at the first run)."""
    spec = bundle.manifest["graphs"][g]
    where = f"bundle {bundle.source}: {spec['file']!r}"
    inputs = sess.get_inputs()
    if len(inputs) != 1 or inputs[0].name != spec.get("input"):
        raise BundleError(f"{where} has inputs {[i.name for i in inputs]}, {MANIFEST} says {spec.get('input')!r}")
    if inputs[0].type != dtype or not _dims_ok(inputs[0].shape, in_shape):
        raise BundleError(f"{where} input {inputs[0].name!r} is {inputs[0].type} {inputs[0].shape}, "
                          f"expected {dtype} {['N' if x is None else x for x in in_shape]}")
    outputs = {o.name: o for o in sess.get_outputs()}
    wanted = spec.get("outputs", [])
    if list(wanted)[:2] != ["embedding", "label_scores"] or any(o not in outputs for o in wanted):
        raise BundleError(f"{where} has outputs {sorted(outputs)}, {MANIFEST} says {wanted} "
                          "(must start with 'embedding', 'label_scores')")
    for out, width in (("embedding", d), ("label_scores", c)):
        if not _dims_ok(outputs[out].shape, [None, width]):
            raise BundleError(f"{where} output {out!r} has shape {outputs[out].shape}, expected [N, {width}]")


def _dims_ok(shape, expected) -> bool:
    """Static dims must equal the expected ones; symbolic/unknown dims (str/None) and expected None pass."""
    if shape is None or len(shape) != len(expected):
        return False
    return all(e is None or not isinstance(s, int) or s == e for s, e in zip(shape, expected))
