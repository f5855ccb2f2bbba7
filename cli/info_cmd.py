"""``dagnn info --bundle B``: what a bundle is (its identity digest) and what it holds, without running it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import app
from .options import expect_digest_opt


def image_cost(manifest: dict) -> dict | None:
    """The image graph's recorded cost (backbones, input side, MACs per photo, passes) and mirror flag, or None
    for a bundle exported before they were recorded or with fields of the wrong type (nothing to state)."""
    graph = manifest.get("graphs", {}).get("image_encoder", {})
    cost = graph.get("cost") if isinstance(graph, dict) else None
    if not isinstance(cost, dict):
        return None
    names, side, macs, passes = (cost.get(k) for k in ("backbones", "input_side", "macs_per_photo", "passes"))
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and isinstance(side, int)
            and isinstance(macs, int) and isinstance(passes, int)):
        return None
    return {"backbones": names, "input_side": side, "macs_per_photo": macs, "passes": passes,
            "mirror": graph.get("mirror") is True}


def cost_line(cost: dict) -> str:
    """``image encoder`` line of ``dagnn info``: what runs per photo and how much arithmetic it is."""
    macs = cost["macs_per_photo"]
    amount = f"{macs / 1e9:.2f} GMAC" if macs >= 1e8 else f"{macs / 1e6:.1f} MMAC"
    mirror = f" (mirror: {cost['passes']} passes)" if cost["mirror"] else ""
    return f"{'+'.join(cost['backbones'])} at {cost['input_side']} px, {amount} per photo{mirror}"


def bundle_summary(bundle) -> dict:
    """The facts ``info`` shows, from a verified ``dagnn_runtime.Bundle``."""
    from dagnn_runtime import int8_kernels

    m = bundle.manifest
    _, kernels = int8_kernels.choose(m, "image_encoder", bundle.source)
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    image_graph = m["graphs"]["image_encoder"]  # a dict: read_bundle checked it
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
        "mirror": image_graph.get("mirror") is True,  # false for bundles exported before the option
        "image_encoder": image_cost(m),  # None for bundles exported before it was recorded
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
        *([f"image encoder   {cost_line(s['image_encoder'])}"] if s["image_encoder"] else []),
        "test metrics    " + (", ".join(f"{k} {v:.4f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                        for k, v in metrics.items()) or "none recorded"),
    ]
    typer.echo("\n".join(lines))
