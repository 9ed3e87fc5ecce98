"""`ladnn serve`: the paper's "online diagnostic system" as a local web page and JSON API (FastAPI + uvicorn).

Research software, not a medical device. Uploads are read into memory, never written to disk.
"""
from __future__ import annotations

import base64
import io
import json
import sys
import threading
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ladnn.dicom import MIN_LUNG_FRACTION
from ladnn.generalisation import generalisation, recipe_figures
from ladnn.images import MAX_PIXELS, ImageError
from ladnn.predict import Predictor

PAGE = Path(__file__).with_name("page.html")


def create_app(run_dir: str | Path, max_upload_mb: float = 20, max_files: int = 16,
               max_pixels: int = MAX_PIXELS, window=None) -> FastAPI:
    """The service for one trained run; the model is loaded once, here. `window`: how DICOM uploads are shown to the
    model (ladnn.dicom)."""
    pred = Predictor(run_dir, window=window)
    lock = threading.Lock()  # one model, shared: Grad-CAM++ hooks must not interleave
    limit = int(max_upload_mb * 1024 * 1024)
    MultiPartParser.spool_max_size = limit + 1  # keep every upload in memory (the default spills to disk at 1 MB)
    metrics = pred.run.metrics
    gen = generalisation(metrics, recipe_figures(pred.config), pred.run.evaluations())
    info = {"run": str(run_dir), "config": pred.config.to_dict(), "outputs": ["COVID", *pred.tasks[1:]],
            "weights_source": pred.model.weights_source, "test_metrics": metrics.covid.to_dict(),
            "test_metrics_ci95": metrics.covid_ci95.to_dict(), "generalisation": gen,
            "limits": {"max_upload_mb": max_upload_mb, "max_files": max_files, "max_pixels": max_pixels},
            "notice": "Research software, not a medical device. The model only knows chest CT slices."}
    app = FastAPI(title="LA-DNN diagnosis service (research use only)", version="0.1.0",
                  description="COVID-19 and lesion probabilities for chest CT slices, with Grad-CAM++ maps. "
                              + info["notice"])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text().replace("__MODEL_INFO__", json.dumps(info))

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/model")
    def model() -> dict:
        """The run's configuration, weights and test metrics."""
        return info

    @app.post("/api/predict")
    async def predict(request: Request, cam: bool = False) -> dict:
        """Multipart upload of one or more images (field name `files`). Returns per image the COVID probability,
        the lesion probabilities (LA-DNN) and, with `?cam=true`, Grad-CAM++ overlays as PNG data URLs."""
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
        results = []
        for f in files:
            data = await f.read()
            name = f.filename or "<upload>"
            try:
                with lock:
                    rgb, x, meta = pred.preprocess_with_info(data, name, max_pixels)
                    r = {"filename": name, **pred.result(pred.probs(x)[0]), "warnings": meta["check"]["warnings"]}
                    if "lung_fraction" in meta:
                        r["lung_fraction"] = meta["lung_fraction"]
                        if meta["lung_fraction"] < MIN_LUNG_FRACTION:
                            r["warnings"].append(f"this DICOM slice shows little lung (lung fraction "
                                                 f"{meta['lung_fraction']:.3f}): the model only saw slices "
                                                 "through the lungs")
                    if cam:
                        r["cam"] = pred.cam_overlays(rgb, x)
                        buf = io.BytesIO()
                        Image.fromarray(rgb).save(buf, "PNG")
                        r["image"] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            except ImageError as e:
                status = 413 if "exceeds the limit" in str(e) else 415 if "not a readable image" in str(e) else 400
                raise HTTPException(status, str(e)) from None
            results.append(r)
        return {"results": results, "notice": info["notice"]}

    return app


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, window=None) -> None:
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {host} exposes this research tool to other machines on the network; it is not "
              "a medical device and has no authentication", file=sys.stderr)
    uvicorn.run(create_app(run_dir, window=window), host=host, port=port)
