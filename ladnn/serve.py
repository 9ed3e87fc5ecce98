"""`ladnn serve`: the paper's "online diagnostic system" as a local web page and JSON API (FastAPI + uvicorn).

Research software, not a medical device. Uploads are read into memory, never written to disk.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ladnn.config import NOTICE
from ladnn.generalisation import new_data_report, recipe_figures
from ladnn.images import MAX_PIXELS, ImageError, data_url
from ladnn.predict import Predictor
from ladnn.rundir import METRICS, FinishedRun
from ladnn.scores import PRED
from ladnn.summary import Evaluation

PAGE = Path(__file__).with_name("page.html")
_ERROR_LIST = {"errors": [{"filename": "scan.txt", "status": 415, "error": "scan.txt: not a readable image or DICOM file"}]}
PREDICT_RESPONSES = {
    200: {"description": "every file scored: `results` (one per file, in upload order), empty `errors`"},
    207: {"description": "some files scored: `results` for those, and `errors`, one per file that failed, each "
                         "with its filename, status and message",
          "content": {"application/json": {"example": {"results": [{"filename": "a.png", PRED.p_covid: 0.4}],
                                                       **_ERROR_LIST}}}},
    400: {"description": "no file uploaded, a malformed form, or no file could be scored (truncated, empty, "
                         "corrupt); `detail` names every file"},
    411: {"description": "no Content-Length header"},
    413: {"description": "the upload, a file's pixels, or the number of files exceeds a limit"},
    415: {"description": "no uploaded file is a readable image or DICOM file", "content": {
        "application/json": {"example": {"detail": "scan.txt: not a readable image or DICOM file", **_ERROR_LIST}}}},
}


def error_status(e: ImageError) -> int:
    """The HTTP status of an upload that cannot be scored: 413 over a limit, 415 not an image, else 400."""
    return 413 if "exceeds the limit" in str(e) else 415 if "not a readable image" in str(e) else 400


def script_json(value) -> str:
    """`value` as JSON to paste into an inline <script>: `<`, `>` and `&` written as \\u003c, \\u003e and \\u0026
    (the same JSON), so no string in it can close the script, open a comment or start an entity."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def evaluations(run: FinishedRun) -> dict[str, Evaluation]:
    """The run's `ladnn evaluate` outputs (`FinishedRun.evaluations`: a damaged metrics.json is named on stderr and left
    out) whose figures the page can show: one with a figure that is not a finite number is named and left out too, so
    the others and the service still work."""
    out = {}
    for name, e in run.evaluations().items():
        try:  # its figures as the page shows them: numbers where numbers belong, and no NaN (not JSON)
            json.dumps(new_data_report(run.metrics, evaluations={name: e}), allow_nan=False)
        except Exception as err:  # noqa: BLE001 - a wrong type or value in a figure: named and skipped
            why = " ".join(f"{type(err).__name__}: {err}".split())
            print(f"{run.path / name / METRICS}: damaged evaluation, skipped ({why})", file=sys.stderr, flush=True)
            continue
        out[name] = e
    return out


def create_app(run_dir: str | Path, max_upload_mb: float = 20, max_files: int = 16,
               max_pixels: int = MAX_PIXELS, window=None, device: str = "auto") -> FastAPI:
    """The service for one trained run; the model is loaded once, here. `window`: how DICOM uploads are shown to the
    model (ladnn.dicom); `device`: where it scores (auto: the GPU when there is one)."""
    pred = Predictor(run_dir, device, window=window)
    # one worker thread scores, one upload at a time (one model, shared: Grad-CAM++ hooks must not interleave);
    # the event loop stays free
    scoring = anyio.CapacityLimiter(1)
    limit = int(max_upload_mb * 1024 * 1024)
    MultiPartParser.spool_max_size = limit + 1  # keep every upload in memory (the default spills to disk at 1 MB)
    metrics = pred.run.metrics
    gen = new_data_report(metrics, recipe_figures(pred.config), evaluations(pred.run), pred.run.unseen_predictions)
    info = {"run": str(run_dir), "config": pred.config.to_dict(), "outputs": ["COVID", *pred.tasks[1:]],
            "weights_source": pred.weights_source, "test_metrics": metrics.covid.to_dict(),
            "test_metrics_ci95": metrics.covid_ci95.to_dict(), "generalisation": gen,
            "limits": {"max_upload_mb": max_upload_mb, "max_files": max_files, "max_pixels": max_pixels},
            "notice": f"{NOTICE} The model only knows chest CT slices."}
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        """The scoring copy (ONNX, exported on a run's first use on this machine) and the model that Grad-CAM++
        needs are built before the first request: building them holds the GIL for moments, which would stall
        /api/health during the first upload."""
        await anyio.to_thread.run_sync(lambda: (pred.scorer, pred.model), limiter=scoring)
        yield

    app = FastAPI(title="LA-DNN diagnosis service (research use only)", version="0.1.0", lifespan=lifespan,
                  description="COVID-19 and lesion probabilities for chest CT slices, with Grad-CAM++ maps. "
                              + info["notice"])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        """The page, with the model's info as JSON in its script (`script_json`: data never closes the script)."""
        return PAGE.read_text().replace("__MODEL_INFO__", script_json(info))

    @app.get("/api/health")
    async def health() -> dict:
        """Answers at once, also while uploads are being scored (scoring runs in a worker thread)."""
        return {"status": "ok"}

    @app.get("/api/model")
    def model() -> dict:
        """The run's configuration, weights and test metrics."""
        return info

    def score(data: bytes, name: str, cam: bool) -> dict:
        """One upload's result (runs in the worker thread); ImageError for an input that cannot be scored."""
        rgb, x, meta = pred.preprocess_with_info(data, name, max_pixels)
        probs, maps = pred.score(x, pred.task_indices) if cam else (pred.probs(x), None)
        r = {"filename": name, **pred.result(probs[0]), "warnings": meta["check"]["warnings"]}
        if "lung_fraction" in meta:  # its warning, when it shows little lung, is among `warnings` (Predictor)
            r["lung_fraction"] = meta["lung_fraction"]
        if cam:
            r["cam"] = pred.cam_overlays(rgb, x, maps=maps)
            r["image"] = data_url(rgb, "png")
        return r

    @app.post("/api/predict", responses=PREDICT_RESPONSES)
    async def predict(request: Request, cam: bool = False):
        """Multipart upload of one or more images (field name `files`). Returns per image the COVID probability,
        the lesion probabilities (LA-DNN) and, with `?cam=true`, Grad-CAM++ overlays as JPEG data URLs and the
        image the model saw as a PNG one. Files that cannot be scored are listed in `errors`, one per file, beside
        the results of the others (status 207); when no file can be scored the status is that of the errors (400,
        413 or 415) and `detail` names every file."""
        length = request.headers.get("content-length")
        if length is None:
            raise HTTPException(411, "a Content-Length header is required")
        if int(length) > limit:
            raise HTTPException(413, f"upload of {int(length)} bytes exceeds the limit of {max_upload_mb} MB")
        try:
            form = await request.form(max_files=max_files, max_fields=max_files + 8)
        except (StarletteHTTPException, MultiPartException) as e:  # Starlette's own 400 for a bad or too large form
            detail = str(getattr(e, "detail", None) or getattr(e, "message", e))
            raise HTTPException(413 if "too many" in detail.lower() else 400, detail) from None
        files = [f for f in form.getlist("files") if hasattr(f, "read")]
        if not files:
            raise HTTPException(400, "no image uploaded: send one or more files in the multipart field 'files'")
        results, errors = [], []
        for f in files:
            data = await f.read()
            name = f.filename or "<upload>"
            try:  # off the event loop: other requests (health, the page) are answered meanwhile
                results.append(await anyio.to_thread.run_sync(score, data, name, cam, limiter=scoring))
            except ImageError as e:
                errors.append({"filename": name, "status": error_status(e), "error": str(e)})
        if not results:
            codes = {e["status"] for e in errors}
            detail = "; ".join(e["error"] for e in errors)
            return JSONResponse({"detail": detail, "errors": errors, "notice": info["notice"]},
                                status_code=codes.pop() if len(codes) == 1 else 400)
        body = {"results": results, "errors": errors, "notice": info["notice"]}
        # rendered in the worker thread too: 16 results with overlays are megabytes of JSON
        return await anyio.to_thread.run_sync(JSONResponse, body, 207 if errors else 200)

    return app


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, window=None, device: str = "auto") -> None:
    import uvicorn

    from ladnn.infer import describe, use_device

    print(describe(use_device(device)), file=sys.stderr, flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {host} exposes this research tool to other machines on the network; it is not "
              "a medical device and has no authentication", file=sys.stderr)
    uvicorn.run(create_app(run_dir, window=window, device=device), host=host, port=port)
