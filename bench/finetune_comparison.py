"""Summarises bench/finetune_comparison.sh: a Markdown table and one SVG
with every run's training-loss curve (a moving average) and eval losses.

    python3 bench/finetune_comparison.py OUT base RUN...
"""
import json
import statistics
import sys
from pathlib import Path

BENCHMARKS = [("arc_easy", "ARC-e"), ("arc_challenge", "ARC-c"), ("hellaswag", "HellaSwag"), ("mmlu", "MMLU")]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
SMOOTHING = 8  # steps in the training-loss moving average


def read_metrics(run_dir):
    train, evals = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train.append(record)
        elif "eval_loss" in record:
            evals.append((record["step"], record["eval_loss"]))
    return train, evals


def moving_average(values, width):
    return [statistics.fmean(values[max(0, i - width + 1): i + 1]) for i in range(len(values))]


def table(out, base, runs):
    header = "| run | eval loss before → after | vs adamw | " + " | ".join(f"{name} acc / acc_norm" for _, name in BENCHMARKS)
    header += " | model state B/param | train tokens/s (median step) | peak RSS GiB |"
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    adamw_loss = json.loads((out / "adamw" / "result.json").read_text())["eval_loss_after"] if "adamw" in runs else None

    def scores(name):
        cells = []
        for key, _ in BENCHMARKS:
            result = json.loads((out / name / "benchmarks" / f"{key}.json").read_text())
            cells.append(f"{result['acc']:.3f} / {result['acc_norm']:.3f}")
        return cells

    rows.append(f"| {base} (not fine-tuned) | | | " + " | ".join(scores(base)) + " | | | |")
    for run in runs:
        result = json.loads((out / run / "result.json").read_text())
        train, _ = read_metrics(out / run)
        rate = statistics.median(r["tokens"] / r["seconds"] for r in train)
        loss = result["eval_loss_after"]
        relative = f"{100 * (loss / adamw_loss - 1):+.2f} %" if adamw_loss else ""
        plan = json.loads((out / run / "plan.json").read_text())
        state = sum(plan[key] for key in ("weights", "adapters", "grads", "weight_copies", "momentum", "variances"))
        rows.append(f"| {run} | {result['eval_loss_before']:.4f} → {loss:.4f} | {relative} | " + " | ".join(scores(run))
                    + f" | {state / plan['params']:.2f} | {rate:.0f} | {result['peak_rss_bytes'] / 2**30:.2f} |")
    return "\n".join(rows) + "\n"


def plot(out, runs):
    width, height, left, right, top, bottom = 760, 440, 64, 190, 20, 44
    series = {run: read_metrics(out / run) for run in runs}
    smoothed = {run: [(r["step"], v) for r, v in zip(train, moving_average([r["loss"] for r in train], SMOOTHING))]
                for run, (train, _) in series.items()}
    points = [p for s in smoothed.values() for p in s] + [p for _, evals in series.values() for p in evals]
    max_step = max(step for step, _ in points)
    low, high = min(v for _, v in points), max(v for _, v in points)
    margin = (high - low) * 0.05 or 0.1
    low, high = low - margin, high + margin

    def x(step):
        return left + (width - left - right) * step / max_step

    def y(loss):
        return top + (height - top - bottom) * (high - loss) / (high - low)

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>']
    for tick in range(5):
        loss, step = low + (high - low) * tick / 4, max_step * tick / 4
        svg.append(f'<text x="{left - 6}" y="{y(loss) + 4:.1f}" text-anchor="end">{loss:.2f}</text>')
        svg.append(f'<text x="{x(step):.1f}" y="{height - bottom + 16}" text-anchor="middle">{step:.0f}</text>')
    svg.append(f'<text x="{(width - right + left) / 2}" y="{height - 8}" text-anchor="middle">step '
               f'(training loss: moving average of {SMOOTHING} steps; dots: eval loss)</text>')
    for index, run in enumerate(runs):
        color = COLORS[index % len(COLORS)]
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in smoothed[run])
        svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        for step, loss in series[run][1]:
            svg.append(f'<circle cx="{x(step):.1f}" cy="{y(loss):.1f}" r="3.5" fill="{color}"/>')
        svg.append(f'<text x="{width - right + 12}" y="{top + 16 * (index + 1)}" fill="{color}">{run}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def main():
    out, base, runs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    summary = table(out, base, runs)
    (out / "summary.md").write_text(summary)
    (out / "loss_curves.svg").write_text(plot(out, runs))
    print(summary, end="")


if __name__ == "__main__":
    main()
