"""API v1 route handlers: parse and check the request, call the ``Service``, render JSON. Nothing else."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import parsing as p
from .errors import ApiError
from .errors import JSONAnswer as JSONResponse  # answers that cannot fail to render

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}


def _ready(request: Request):
    """The loaded service, or a 503 (with Retry-After while loading): never a 500 before it is ready."""
    return request.app.state.dagnn.require()


def _limits(request: Request):
    return request.app.state.dagnn.limits


def _unsupported(request: Request, expected: str) -> ApiError:
    got = p.media_type(request) or "no Content-Type"
    return ApiError(415, "unsupported_media_type", f"expected {expected}, got {p.shorten(got)}")


async def search(request: Request) -> Response:
    service, limits = _ready(request), _limits(request)
    kind = p.media_type(request)
    if kind == p.MULTIPART:
        form = await p.form(request, limits)
        try:
            unknown = sorted(set(form) - {"image", "target", "k", "labels"})
            if unknown:
                raise p.bad(p.shorten(unknown[0]), "unknown form field (expected image, target, k, labels)")
            if "image" not in form:
                raise p.bad("image", "missing: send the photo as the 'image' file part")
            data = await p.upload_bytes(form["image"])
            args = dict(target=p.target(form.get("target")), k=p.k(form.get("k"), limits, form=True),
                        labels=p.labels(form.get("labels"), service.model.labels, limits, form=True))
        finally:
            await form.close()
        return JSONResponse(await service.search(image=data, **args))
    if kind == p.JSON:
        body = await p.json_object(request, limits, {"text", "target", "k", "labels"})
        if "text" not in body:
            raise p.bad("text", "missing: give tags like 'sky, clouds' (or upload an image as multipart)")
        return JSONResponse(await service.search(
            text=p.text(body["text"], limits), target=p.target(body.get("target")), k=p.k(body.get("k"), limits),
            labels=p.labels(body.get("labels"), service.model.labels, limits)))
    raise _unsupported(request, "multipart/form-data (image) or application/json (text)")


async def tag(request: Request) -> Response:
    service, limits = _ready(request), _limits(request)
    if p.media_type(request) != p.MULTIPART:
        raise _unsupported(request, "multipart/form-data with an 'image' file part")
    form = await p.form(request, limits)
    try:
        unknown = sorted(set(form) - {"image", "top"})
        if unknown:
            raise p.bad(p.shorten(unknown[0]), "unknown form field (expected image, top)")
        if "image" not in form:
            raise p.bad("image", "missing: send the photo as the 'image' file part")
        data = await p.upload_bytes(form["image"])
        top = p.k(form.get("top") or None, limits, default=None, form=True, field="top")
    finally:
        await form.close()
    return JSONResponse(await service.tag(data, top=top))


async def add_items(request: Request) -> Response:
    service, limits = _ready(request), _limits(request)
    kind = p.media_type(request)
    if kind == p.MULTIPART:
        form = await p.form(request, limits, max_files=limits.max_items)
        try:
            unknown = sorted(set(form) - {"image", "id", "metadata"})
            if unknown:
                raise p.bad(p.shorten(unknown[0]), "unknown form field (expected image, id, metadata)")
            files, ids, metas = form.getlist("image"), form.getlist("id"), form.getlist("metadata")
            if not files or len(ids) != len(files) or len(metas) not in (0, len(files)):
                raise p.bad("id", f"give one 'id' (and optionally one 'metadata') per 'image' part: got {len(files)} "
                            f"images, {len(ids)} ids, {len(metas)} metadata")
            items = [(p.item_id(i, limits), await p.upload_bytes(f), p.metadata(m, limits))
                     for i, f, m in zip(ids, files, metas or [None] * len(files))]
        finally:
            await form.close()
        return JSONResponse(await service.add_images(items), status_code=201)
    if kind == p.JSON:
        body = await p.json_object(request, limits, {"items"})
        raw = body.get("items")
        if not isinstance(raw, list) or not raw or len(raw) > limits.max_items:
            raise p.bad("items", f"expected a list of 1 to {limits.max_items} objects {{id, text, metadata}}")
        items = []
        for n, item in enumerate(raw):
            if not isinstance(item, dict) or set(item) - {"id", "text", "metadata"}:
                raise p.bad(f"items[{n}]", "expected an object with 'id', 'text' and optionally 'metadata'")
            items.append((p.item_id(item.get("id"), limits, f"items[{n}].id"),
                          p.text(item.get("text"), limits, f"items[{n}].text"),
                          p.metadata(item.get("metadata"), limits, f"items[{n}].metadata")))
        return JSONResponse(await service.add_texts(items), status_code=201)
    raise _unsupported(request, "multipart/form-data (images) or application/json (texts)")


async def remove_item(request: Request) -> Response:
    service, limits = _ready(request), _limits(request)
    return JSONResponse(await service.remove(p.item_id(request.path_params["item_id"], limits)))


async def item_image(request: Request) -> Response:
    """The item's photo, read through the descriptor that was checked (``service.image_file``): no path
    from the client, no link followed, no special file opened."""
    service, limits = _ready(request), _limits(request)
    photo = await service.image_file(p.item_id(request.path_params["item_id"], limits))
    kind = IMAGE_TYPES.get(photo.suffix, "application/octet-stream")
    return Response(photo.data, media_type=kind, headers={"Cache-Control": "private, max-age=3600",
                                                          "X-Content-Type-Options": "nosniff"})


async def labels(request: Request) -> Response:
    return JSONResponse({"labels": _ready(request).labels()})


async def info(request: Request) -> Response:
    state = request.app.state.dagnn
    return JSONResponse({**_ready(request).info(), "limits": state.limits.as_dict(), "version": state.version})


ROUTES = [
    Route("/v1/search", search, methods=["POST"]),
    Route("/v1/tag", tag, methods=["POST"]),
    Route("/v1/items", add_items, methods=["POST"]),
    Route("/v1/items/{item_id:path}/image", item_image, methods=["GET"]),
    Route("/v1/items/{item_id:path}", remove_item, methods=["DELETE"]),
    Route("/v1/labels", labels, methods=["GET"]),
    Route("/v1/info", info, methods=["GET"]),
]
