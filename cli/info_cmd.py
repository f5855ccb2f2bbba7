"""``dagnn info --bundle B``: what a bundle is (its identity digest) and what it holds, without running it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import app
from .options import expect_digest_opt


def bundle_summary(bundle) -> dict:
    """The facts ``info`` shows, from a verified ``dagnn_runtime.Bundle``."""
    from dagnn_runtime import int8_kernels

    m = bundle.manifest
    _, kernels = int8_kernels.choose(m, "image_encoder", bundle.source)
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    return {
        "bundle": bundle.source,
        "bundle_digest": bundle.digest,
        "self_checked": bundle.self_checked,
        "embedding_space": bundle.embedding_space,
        "format_version": m.get("format_version"),
        "created": m.get("created"),
        "model": {k: model.get(k) for k in ("variant", "gnn", "backbone")},
        "precision": model.get("precision", "fp32"),
        "int8_kernels": kernels,  # None for an fp32 image graph
        "labels": len(bundle.labels),
        "vocabulary": len(bundle.vocab),
        "embedding_dim": bundle.embedding_dim,
        "image_size": bundle.image_size,
        "metrics": m.get("metrics", {}).get("test") if isinstance(m.get("metrics"), dict) else None,
    }


@app.command("info")
def info(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle folder or .dagnn archive."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    expect_digest: Optional[str] = expect_digest_opt,
):
    """Verify a bundle and print its identity (bundle digest), sizes, precision and test metrics."""
    from dagnn_runtime.bundle import read_bundle

    opened = read_bundle(bundle, expect_digest=expect_digest)
    opened.verify_graphs()  # loading checks a graph only when it is used; info checks every file
    s = bundle_summary(opened)
    if as_json:
        typer.echo(json.dumps(s, indent=2, ensure_ascii=False))
        return
    check = "verified against the manifest's own digest" if s["self_checked"] else \
        "no self-check (exported before bundle_digest existed)"
    metrics = s["metrics"] or {}
    lines = [
        f"bundle          {s['bundle']}",
        f"bundle digest   {s['bundle_digest']}  ({check})",
        f"embedding space {s['embedding_space']}",
        f"model           {s['model']['variant']} / gnn {s['model']['gnn']} / backbone {s['model']['backbone']}",
        f"precision       {s['precision']}" + (f" (image graph served with {s['int8_kernels']})"
                                                     if s["int8_kernels"] else ""),
        f"labels          {s['labels']}",
        f"vocabulary      {s['vocabulary']} tags",
        f"dimensions      embedding {s['embedding_dim']}, image {s['image_size']}x{s['image_size']}",
        "test metrics    " + (", ".join(f"{k} {v:.4f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                        for k, v in metrics.items()) or "none recorded"),
    ]
    typer.echo("\n".join(lines))
