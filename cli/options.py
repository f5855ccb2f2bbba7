"""Options that several commands share, and loading a bundle the way every command does it."""
from __future__ import annotations

import typer

bundle_opt = typer.Option(..., "--bundle", help="Bundle folder or .dagnn archive.")
threads_opt = typer.Option(None, "--threads", min=1,
                           help="Inference threads (default: onnxruntime's choice; at most the number of cores).")
force_threads_opt = typer.Option(False, "--force-threads",
                                 help="Allow --threads above the number of cores (up to 1024), for experiments.")
expect_digest_opt = typer.Option(None, "--expect-digest", metavar="SHA256",
                                 help="Refuse the bundle unless its bundle digest (`dagnn info`) is this one.")

INDEX_HELP = ("An index folder, a parent holding image/ and text/, a Milvus Lite *.db path or a Milvus "
              "http(s):// URI.")
token_opt = typer.Option(None, "--token", envvar="DAGNN_MILVUS_TOKEN", help="Milvus server token.")


def index_opt(aliases: tuple = ()):
    """``--index``, the one way every command names where the indexes are."""
    return typer.Option(..., "--index", *aliases, help=INDEX_HELP)


def open_index_set(location, token=None):
    """The ``IndexSet`` at ``--index``, resolved once for the whole command."""
    from dagnn_runtime.indexes import IndexSet

    return IndexSet(location, token=token)


def checked_threads(threads, force_threads: bool = False):
    """``--threads`` as the runtime will take it; a refusal names the CLI's options, not the library's."""
    from dagnn_runtime.execution import check_threads

    return check_threads(threads, force_threads, option="--threads", force_option="--force-threads")


def load_model(bundle, threads=None, force_threads: bool = False, expect_digest=None, **kwargs):
    """``dagnn_runtime.load`` with the shared options checked first (one-line errors naming the option)."""
    import dagnn_runtime as dr

    checked_threads(threads, force_threads)
    return dr.load(bundle, threads=threads, force_threads=force_threads, expect_digest=expect_digest, **kwargs)
