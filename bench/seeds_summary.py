"""Eval loss after fine-tuning, mean ± sample standard deviation over seeds,
from bench/finetune_comparison.sh runs (one OUT directory per seed), and
each run's mean relative to QLion's with 8-bit momentum (qlion-stochastic).

    python3 bench/seeds_summary.py OUT_SEED1 OUT_SEED2 ...
"""
import json
import statistics
import sys
from pathlib import Path


def main():
    outs = [Path(arg) for arg in sys.argv[1:]]
    if not outs:
        sys.exit(__doc__)
    runs = sorted({p.parent.name for out in outs for p in out.glob("*/result.json")})
    losses = {run: [json.loads((out / run / "result.json").read_text())["eval_loss_after"] for out in outs
                    if (out / run / "result.json").exists()] for run in runs}
    base = "qlion-stochastic" if "qlion-stochastic" in runs else runs[0]
    first = statistics.fmean(losses[base])
    print(f"| run | seeds | eval loss after, mean ± sd | each seed | mean vs {base} |")
    print("|---|---:|---|---|---:|")
    for run in runs:
        values = losses[run]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        mean = statistics.fmean(values)
        print(f"| {run} | {len(values)} | {mean:.4f} ± {sd:.4f} | {' '.join(f'{v:.4f}' for v in values)} "
              f"| {100 * (mean / first - 1):+.2f} % |")


if __name__ == "__main__":
    main()
