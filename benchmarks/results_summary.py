"""Print a profile's headline numbers as the Results chapter computes them: per method the per-seed and ensemble
test metrics, the pooled LA-DNN - baseline AUC difference with its patient-clustered interval and the detectable
difference, the lesion table with both reference predictors, and the validation search.

    python benchmarks/results_summary.py --runs runs/quick
"""
from __future__ import annotations

import argparse

import pandas as pd

from ladnn.report import lesions, results, selection
from ladnn.rundir import runs_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/quick")
    a = ap.parse_args()
    pd.set_option("display.width", 200, "display.max_columns", 20, "display.max_rows", 200)
    runs = runs_table(a.runs)
    cols = ["backbone", "dataset", "method", "seed", "auc", "sensitivity", "f1", "accuracy", "best_epoch", "seconds"]
    print("per run:\n", runs[cols].sort_values(["method", "seed"]).round(4).to_string(index=False))
    ens = results.ensemble_table(runs)
    print("\nmean over seeds and seed ensemble (%):\n", ens.drop(columns="ensemble").to_string(index=False))
    pooled = results.pooled_difference(runs)
    print("\npooled LA-DNN - baseline:\n", results.pooled_table(pooled).to_string())
    print("\nper seed:\n", results.paired_table(results.paired_tests(runs)).to_string(index=False))
    print("\nTable 3:\n", lesions.table3(runs).to_string())
    text = lesions.lesion_sentence(lesions.lesion_verdict(runs))
    print("\n" + text)
    print("\n" + results.verdict(pooled, ens, text))
    print("\nsearch (validation only):\n", selection.selection_table().to_string())


if __name__ == "__main__":
    main()
