"""Transfer measurements for the chapter "New sources": the benchmark runs of benchmarks/source_protocol.py scored
with and without test-time BatchNorm adaptation (AdaBN, ladnn.infer.adapt_batchnorm), and the official runs scored
on the external sets of protocol (d).

For every run under `--out`:
- protocol collection (c) and grouped (b) runs: their validation and test images, plain and with AdaBN adapted on
  that part's own unlabelled images (selection reads the validation rows only);
- official runs: D0's test split, the D1 images present and COVID-CT-MD (`--external`, labels.csv), plain and with
  AdaBN adapted on each target set's unlabelled images; runs trained on D0+D1 (candidate `D0+D1`) on COVID-CT-MD
  alone, since D1 is their training data.
One gzipped CSV, ladnn/resources/transfer_quick.csv.gz: candidate, adabn, method, protocol, fold, seed, part (val/test or the
target), image, y_true, p_covid, group, collection, patient, slice_scored, lung_fraction.

    python benchmarks/transfer.py --out runs/bench19 --external ../shared/external/covid-ct-md-sample
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ladnn.data import load_table, splits
from ladnn.dicom import MIN_LUNG_FRACTION
from ladnn.evaluate import external_table
from ladnn.images import ImageCache, read_bytes
from ladnn.infer import adapt_batchnorm, tta_outputs
from ladnn.predict import Predictor
from ladnn.report.unseen import pipeline_name
from ladnn.rundir import find_runs
from ladnn.scores import PRED
from ladnn.sources import linked_groups

ROOT = Path(__file__).resolve().parent.parent
OUT_CSV = ROOT / "ladnn" / "resources" / "transfer_quick.csv.gz"


def _p(pr: Predictor, imgs: torch.Tensor, adabn: bool) -> np.ndarray:
    net = adapt_batchnorm(pr.model, imgs, pr.model.data_config, pr.device) if adabn else pr.model
    c = pr.config
    logits = tta_outputs(net, imgs, c.tta, pr.model.data_config, pr.device, c.tta_seed, c.augment)
    return torch.sigmoid(logits[:, 0]).numpy()


def _rows(key: dict, part: str, df: pd.DataFrame, p: np.ndarray, **extra) -> pd.DataFrame:
    out = pd.DataFrame({**key, "part": part, PRED.image: df["name"].to_numpy(),
                        PRED.y_true: df["covid"].astype(int).to_numpy(), PRED.p_covid: p.round(5)})
    for k, v in extra.items():
        out[k] = v
    return out


def score_run(run, external: Path | None, adabns: tuple[bool, ...] = (False, True)) -> list[pd.DataFrame]:
    c = run.config
    pr = Predictor(run.path)
    key = {"candidate": pipeline_name(c.preprocess, c.augment, c.finetune, c.dataset), "method": c.method,
           "protocol": c.protocol, "fold": c.fold if c.protocol != "official" else -1, "seed": c.seed}
    cache = ImageCache(pr.size, steps=c.preprocess)
    out = []
    if c.protocol != "official":
        data = splits(c)
        parts = {s: data[s] for s in ("val", "test")}
    elif c.dataset == "D0":
        d1 = load_table("D0+D1").query("dataset == 'D1'").reset_index(drop=True)
        parts = {"test": splits(c)["test"], "D1": d1}
    else:  # trained on D0+D1: D1 is no longer external, and the official test split mixes both; COVID-CT-MD alone
        parts = {}
    for part, df in parts.items():
        imgs = cache.stack(df["image"])
        for adabn in adabns:
            out.append(_rows({**key, "adabn": adabn}, part, df, _p(pr, imgs, adabn), group=linked_groups(df).to_numpy(),
                             collection=df["collection"].to_numpy(), patient=df["patient"].to_numpy()))
    if c.protocol == "official" and external is not None:
        ext = external_table(external)
        xs, lung = [], []
        for f in tqdm(ext["image"], desc="COVID-CT-MD", unit="slice"):
            _, x, info = pr.preprocess_with_info(read_bytes(f), f)
            xs.append(x)
            lung.append(info.get("lung_fraction", np.nan))
        imgs, lung = torch.cat(xs), np.array(lung)
        for adabn in adabns:
            out.append(_rows({**key, "adabn": adabn}, "COVID-CT-MD", ext, _p(pr, imgs, adabn), group=ext["patient"],
                             collection="COVID-CT-MD", patient=ext["patient"],
                             slice_scored=ext["slice_scored"].to_numpy() & (lung >= MIN_LUNG_FRACTION),
                             lung_fraction=lung.round(4)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/source-bench", help="folder of benchmarks/source_protocol.py's runs")
    ap.add_argument("--external", default=os.environ.get("LADNN_EXTERNAL_DIR"),
                    help="COVID-CT-MD folder with labels.csv (default: $LADNN_EXTERNAL_DIR)")
    ap.add_argument("--merge", action="store_true", help="replace only the runs under --out in the committed CSV")
    ap.add_argument("--plain-only", action="store_true",
                    help="score without AdaBN only (half the time; AdaBN is measured on today's pipeline, `none`)")
    a = ap.parse_args()
    runs = [r for cand in sorted(Path(a.out).iterdir()) if cand.is_dir() for r in find_runs(cand)]
    frames = []
    for run in tqdm(runs, desc="runs", unit="run"):
        frames += score_run(run, Path(a.external) if a.external else None, (False,) if a.plain_only else (False, True))
    df = pd.concat(frames, ignore_index=True)
    if a.merge:
        from source_protocol import merged

        df = merged(OUT_CSV, df)
    df.to_csv(OUT_CSV, index=False, compression={"method": "gzip", "mtime": 0})  # same bytes for the same rows
    print(f"wrote {OUT_CSV}: {len(runs)} runs, {len(df)} rows")


if __name__ == "__main__":
    main()
