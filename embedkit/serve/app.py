"""The HTTP layer of `embedkit serve`: a FastAPI app of thin routes over a :class:`SearchService`.

Every route only parses its input and calls one service method; the JSON it returns is the
method's. Errors are embedkit's own, each turned into one ``{"error": "..."}`` body: 404 for a row or
path the store does not hold (or a thumbnail of a file that changed), 413 for an upload over the
size limit, 400 for any other bad input (not an image, k out of range...), 422 for a parameter of
the wrong type. Uploads are the image file's bytes as the request body (``curl --data-binary
@q.png``), read in pieces and refused as soon as they pass the limit, so no upload is spooled to disk
or held whole in memory beyond that limit. The OpenAPI description is at ``/api/openapi.json``; the
interactive docs pages of FastAPI are left out because they load their scripts from a CDN.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations (Request, imported with
# fastapi inside create_app) at definition time
import contextlib
import threading
import time
from importlib import resources

from embedkit.errors import ConfigError, EmbedkitError, MissingDependencyError
from embedkit.serve.service import (
    NotFound,
    SearchService,
    UploadTooLarge,
    check_upload_size,
)

SERVER_PACKAGES = ("fastapi", "uvicorn")


def require_server_packages() -> None:
    """Raise :class:`MissingDependencyError` with the install line when the server's packages are missing."""
    import importlib

    for name in SERVER_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingDependencyError(f"embedkit serve needs the optional package {name!r}, which is not installed "
                                         f"({exc}); fix: pip install 'embedkit[serve]'") from exc


def page_html() -> str:
    """The browser page (one self-contained file: inline CSS and JavaScript, no network but this server)."""
    return resources.files("embedkit.serve").joinpath("page.html").read_text(encoding="utf-8")


_IMAGE_BODY = {"requestBody": {"required": True, "description": "the image file's bytes",
                               "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                                           "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(service: SearchService):
    """The FastAPI application answering for ``service``."""
    require_server_packages()
    from fastapi import FastAPI, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="embedkit serve", version="1", openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None, description="Search a code store: neighbours, items, thumbnails, map, duplicates.")
    app.state.service = service
    page = page_html()

    @app.exception_handler(EmbedkitError)
    async def _embedkit_error(request, exc):
        status = 404 if isinstance(exc, NotFound) else 413 if isinstance(exc, UploadTooLarge) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = " ".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'not valid')}"}, status_code=422)

    async def read_upload(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit():
            check_upload_size(int(declared))  # refused before a byte is read
        parts, size = [], 0
        async for part in request.stream():
            if part:
                size += len(part)
                check_upload_size(size)  # stops reading at the first piece past the limit
                parts.append(part)
        data = b"".join(parts)
        check_upload_size(len(data))
        return data

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return HTMLResponse(page)

    @app.get("/api/info", summary="The store, its index, the map and the model")
    def info():
        return service.info()

    @app.get("/api/points", summary="The map: stored rows and their 2-D coordinates (a bounded sample)")
    def points():
        return service.points

    @app.get("/api/items/{row}", summary="Metadata of one stored row")
    def item(row: int):
        return service.item(row)

    @app.get("/api/items", summary="Metadata of the stored row of a path")
    def item_by_path(path: str = Query(..., description="a path exactly as the store records it")):
        return service.item(service.row_of_path(path))

    @app.get("/api/thumbnails/{row}", summary="PNG thumbnail of a stored row (only if its file has the recorded sha1)",
             response_class=Response)
    def thumbnail(row: int):
        return Response(service.thumbnail(row), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/search/row/{row}", summary="Neighbours of a stored row")
    def search_row(row: int, k: int = 10, exclude_self: bool = True):
        return {"query": service.item(row), "results": service.search_row(row, k, exclude_self)}

    @app.get("/api/search/path", summary="Neighbours of a stored path")
    def search_path(path: str, k: int = 10, exclude_self: bool = True):
        row = service.row_of_path(path)
        return {"query": service.item(row), "results": service.search_row(row, k, exclude_self)}

    @app.post("/api/search/image", summary="Neighbours of an uploaded image (and its predicted labels with a model)",
              openapi_extra=_IMAGE_BODY)
    async def search_image(request: Request, k: int = 10, top: int = 5):
        data = await read_upload(request)
        return await run_in_threadpool(service.search_upload, data, k, top)

    @app.post("/api/predict", summary="The classifier's top classes for an uploaded image", openapi_extra=_IMAGE_BODY)
    async def predict(request: Request, top: int = 5):
        data = await read_upload(request)
        return {"predictions": await run_in_threadpool(service.predict_upload, data, top)}

    @app.get("/api/duplicates", summary="Groups of near-duplicate stored images")
    def duplicates(threshold: float = 0.05, limit: int = 200):
        return service.duplicates(threshold, limit)

    return app


def run(service: SearchService, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve ``service`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def serving(service: SearchService, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
    """Serve ``service`` on a background thread (e.g. from a notebook); yields the base URL, stops on exit.

    ``port=0`` takes a free port.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, name="embedkit-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the server could not listen on {host}:{port} (port in use, or not an address of "
                              "this machine); use another port")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
