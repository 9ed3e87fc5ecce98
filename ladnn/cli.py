"""The `ladnn` command line: data fetch|check, train, evaluate, predict, serve."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ladnn.config import NOTICE, Config, add_config_options


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

    t = sub.add_parser("train", help="train one run into a run directory", allow_abbrev=False,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_options(t)
    t.add_argument("--profile", help="start from this profile's recipe: the config of its first run of --method "
                                     "(profiles/NAME.yaml or a YAML path); each option given on the command line "
                                     "replaces one field")
    t.add_argument("--dry-run", action="store_true", help="print the run's config as JSON and train nothing")
    t.add_argument("--out", required=True, help="run directory to create")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in --out: the new run trains beside it and "
                                                       "replaces it only once complete; a failure leaves it as it was")
    t.add_argument("--skip-done", action="store_true", help="exit 0 without training when --out holds a finished run "
                                                         "with exactly this config (the book's --plan lines)")
    _data_arg(t)

    e = sub.add_parser("evaluate", help="score a run's test split, or an external folder, and write metrics")
    e.add_argument("run", help="run directory")
    e.add_argument("--images", help="external set: a folder with labels.csv (file, diagnosis or covid, patient, "
                                    "infected), or with covid/ and noncovid/ subfolders of images or DICOM files")
    e.add_argument("--labels", help="a labels CSV elsewhere than IMAGES/labels.csv (its file column is relative to "
                                    "the CSV's folder)")
    _window_arg(e)
    e.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    _data_arg(e)

    p = sub.add_parser("predict", help="one JSON line per image: COVID and lesion probabilities")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", help="image or DICOM files, or folders of DICOM series (one line per slice, "
                                             "then one per series: the patient score)")
    _window_arg(p)
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")

    s = sub.add_parser("serve", help="the local diagnosis web page and JSON API")
    s.add_argument("run", help="run directory")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    s.add_argument("--port", type=_port, default=8000, help="port (1 to 65535)")
    _window_arg(s)
    s.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    return ap


def _port(text: str) -> int:
    """A TCP port, 1 to 65535 (argparse's error otherwise, not a traceback from the socket)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1 to 65535")
    return port


def _window_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", default="lung", help="how DICOM slices are shown to the model: lung (centre -600, "
                                                   "width 1500 HU), mediastinal (50, 350) or CENTRE,WIDTH in HU")


def _config(a: argparse.Namespace, argv: list[str] | None = None, root: str | None = None) -> Config:
    """The run's Config: the options' values, or with --profile that profile's first run of the method asked (default
    ladnn) with the options given on the command line (`argv`) replacing its fields; the profiles are those of `root`
    (default: the working directory)."""
    if not a.profile:
        return Config.from_namespace(vars(a))
    from pathlib import Path

    from ladnn.profiles import BuildError, load_profile

    try:
        runs = load_profile(a.profile, Path(root) if root else Path.cwd())["runs"]
    except BuildError as e:
        raise ValueError(str(e)) from None
    base = next((c for c in runs if c.method == a.method), runs[0]).to_dict()
    given = {arg.split("=")[0] for arg in (argv or []) if arg.startswith("--")}
    names = {opt: f.replace("-", "_") for f in base for opt in (f"--{f.replace('_', '-')}", f"--no-{f.replace('_', '-')}")}
    return Config.from_dict({**base, **{names[o]: getattr(a, names[o]) for o in given if o in names}})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parser().parse_args(argv)
    a.argv = argv
    if a.cmd in ("evaluate", "predict", "serve") and "torch" not in sys.modules:
        # ONNX Runtime scores (ladnn.infer.onnx_net) between torch's image operations; torch's OpenMP threads
        # busy-wait after each of those and took the cores from it (4 views: 24 ms a call instead of 18 on 2 cores)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        return _run(a)
    except (ValueError, OSError, RuntimeError) as e:  # OSError: FileNotFoundError, a refused special file, ...
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
        z = r["D1"]["archives"]
        print(f"D1 archives: {z['pinned']} pinned; {len(z['present'])} present"
              + (f", {len(z['verified'])} of them verified" if "verified" in z else "")
              + f"; {len(z['absent'])} absent (optional; `ladnn data fetch` downloads them)")
        for rel in z["absent"]:
            print(f"  absent: {rel}")
        if "verify" in r:
            v = r["verify"]
            print(f"digests: {v['ok']} files match, {len(v['missing'])} missing, {len(v['mismatched'])} mismatched")
            if v["mismatched"]:
                print("mismatched:", *v["mismatched"][:10], sep="\n  ")
                return 1
    elif a.cmd == "train":
        from ladnn.train import train

        cfg = _config(a, a.argv)
        if a.dry_run:
            print(json.dumps({"out": a.out, **cfg.to_dict()}))
            return 0
        if a.data_dir:
            os.environ["LADNN_DATA_DIR"] = a.data_dir
        m = train(cfg, a.out, overwrite=a.overwrite, skip_done=a.skip_done)
        print(json.dumps({"out": a.out, **m.covid.to_dict(), "best_epoch": m.run.best_epoch,
                          "seconds": m.run.seconds}))
    elif a.cmd == "evaluate":
        from ladnn.evaluate import evaluate_run, summary_text

        if a.images is not None and not a.images.strip():
            raise ValueError("--images is empty: give the folder to evaluate, or leave it out for the run's test split")
        if a.labels and not a.images:
            raise ValueError("--labels needs --images (the folder its files are in)")
        m = evaluate_run(a.run, a.images, a.data_dir, a.device, a.labels, a.window, progress=True)
        print(summary_text(m))
        print(NOTICE)
    elif a.cmd == "predict":
        from ladnn.dicom import expand_inputs
        from ladnn.predict import Predictor
        from ladnn.scores import AGGREGATION, series_summary

        files, unreadable, series = expand_inputs(a.images)
        res = Predictor(a.run, a.device, window=a.window).predict_files(files) + unreadable
        for r in res:
            print(json.dumps(r))
        for s in series_summary(res, series):
            print(json.dumps({**s, "aggregation": AGGREGATION}))
        print(NOTICE, file=sys.stderr)
        return 1 if any("error" in r for r in res) else 0
    elif a.cmd == "serve":
        from ladnn.serve import serve

        serve(a.run, a.host, a.port, a.window, a.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
