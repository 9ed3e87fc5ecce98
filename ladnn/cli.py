"""The `ladnn` command line: data fetch|check, train, evaluate, predict, serve."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ladnn.config import DATASETS, FINETUNE, LESION_MASKS, LESIONS, METHODS, Config

NOTICE = "Research software, not a medical device: never use it to diagnose anyone."


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding covid-ct/ and la-dnn/ (default: $LADNN_DATA_DIR)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ladnn", description=f"LA-DNN reproduction (Liu et al., KDD 2020). {NOTICE}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="download or check the data").add_subparsers(dest="data_cmd", required=True)
    f = d.add_parser("fetch", help="download COVID-CT and the LA-DNN files (pinned commits, SHA-256 checked)")
    f.add_argument("--dest", help="where to put the data (default: $LADNN_DATA_DIR, else ~/.cache/ladnn/data)")
    c = d.add_parser("check", help="verify a data copy against the manifest and print what it holds")
    _data_arg(c)
    c.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of every file")

    t = sub.add_parser("train", help="train one run into a run directory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--backbone", default="efficientnet_lite0", help="short name (vgg16, resnet18, resnet50, "
                   "densenet121, densenet169, efficientnet_b0, efficientnet_b1, efficientnet_lite0) or any timm name")
    t.add_argument("--method", choices=METHODS, default="ladnn", help="ladnn: COVID + 5 lesion outputs; baseline: COVID")
    t.add_argument("--dataset", choices=DATASETS, default="D0", help="D0 (paper split) or D0+D1 (with new data found)")
    t.add_argument("--seed", type=int, default=0, help="random seed (init, batch order, augmentation)")
    t.add_argument("--epochs", type=int, default=15, help="training epochs")
    t.add_argument("--batch-size", type=int, default=32, help="batch size")
    t.add_argument("--lr", type=float, default=5e-5, help="Adam learning rate")
    t.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay")
    t.add_argument("--finetune", choices=FINETUNE, default="full",
                   help="full: whole network (paper code); head: frozen backbone (paper text); top: last N blocks")
    t.add_argument("--top-blocks", type=int, default=2, help="blocks trained with --finetune top")
    t.add_argument("--views", type=int, default=4, help="augmented views per image cached for head/top")
    t.add_argument("--head", choices=("linear", "fc3"), default="linear", help="linear (paper code) or fc3 (Fig. 2)")
    t.add_argument("--covid-weight", type=float, default=5.0, help="weight of the COVID loss term")
    t.add_argument("--lesion-mask", choices=LESION_MASKS, default="any_lesion",
                   help="which samples get lesion loss terms (any_lesion = the paper code's rule)")
    t.add_argument("--zero-lesions", nargs="*", default=[], choices=LESIONS, metavar="LESION",
                   help="ablation: train with these lesion labels set to 0")
    t.add_argument("--no-pretrained", action="store_true", help="random initialisation (recorded in config.json)")
    t.add_argument("--weights", help="ImageNet weights file for the backbone")
    t.add_argument("--limit", type=int, help="at most this many images per split (quick tests)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--out", required=True, help="run directory to create")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    _data_arg(t)

    e = sub.add_parser("evaluate", help="score a run's test split, or an external folder, and write metrics")
    e.add_argument("run", help="run directory")
    e.add_argument("--images", help="external folder with covid/ and noncovid/ subfolders of images")
    e.add_argument("--device", default="cpu", help="cpu or cuda")
    _data_arg(e)

    p = sub.add_parser("predict", help="one JSON line per image: COVID and lesion probabilities")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--device", default="cpu", help="cpu or cuda")

    s = sub.add_parser("serve", help="the local diagnosis web page and JSON API")
    s.add_argument("run", help="run directory")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port")
    return ap


def _config(a: argparse.Namespace) -> Config:
    fields = {f.name for f in dataclasses.fields(Config)}
    kw = {k: v for k, v in vars(a).items() if k in fields}
    kw["pretrained"] = not a.no_pretrained
    return Config(**kw)


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        return _run(a)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"ladnn {a.cmd}: error: {e}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    if a.cmd == "data" and a.data_cmd == "fetch":
        from ladnn.fetch import fetch
        from ladnn.images import cache_dir

        dest = a.dest or os.environ.get("LADNN_DATA_DIR") or str(cache_dir() / "data")
        print(json.dumps(fetch(dest)))
        print(f"data in {dest}; set LADNN_DATA_DIR={dest}")
    elif a.cmd == "data":
        from ladnn.data import check

        r = check(a.data_dir, verify=not a.no_verify)
        print(f"D0: {r['D0']['covid']} COVID / {r['D0']['noncovid']} non-COVID images; split {r['D0']['split']}")
        print(f"D1: found {r['D1']['found']} of the paper's {r['D1']['of_paper']} new images "
              f"({r['D1']['covid']} COVID / {r['D1']['noncovid']} non-COVID) in {len(r['D1']['zips'])} zip(s)")
        if "verify" in r:
            v = r["verify"]
            print(f"SHA-256: {v['ok']} files match, {len(v['missing'])} missing, {len(v['mismatched'])} mismatched")
            if v["mismatched"]:
                print("mismatched:", *v["mismatched"][:10], sep="\n  ")
                return 1
    elif a.cmd == "train":
        from ladnn.train import train

        if a.data_dir:
            os.environ["LADNN_DATA_DIR"] = a.data_dir
        m = train(_config(a), a.out, overwrite=a.overwrite)
        print(json.dumps({"out": a.out, **m["covid"], "best_epoch": m["run"]["best_epoch"],
                          "seconds": m["run"]["seconds"]}))
    elif a.cmd == "evaluate":
        from ladnn.predict import evaluate_run

        m = evaluate_run(a.run, a.images, a.data_dir, a.device)
        print(json.dumps({"covid": m["covid"], "covid_ci95": m["covid_ci95"], "written_to": m["written_to"]}, indent=2))
        print(NOTICE, file=sys.stderr)
    elif a.cmd == "predict":
        from ladnn.predict import Predictor

        res = Predictor(a.run, a.device).predict_files(a.images)
        for r in res:
            print(json.dumps(r))
        return 1 if any("error" in r for r in res) else 0
    elif a.cmd == "serve":
        from ladnn.serve import serve

        serve(a.run, a.host, a.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
