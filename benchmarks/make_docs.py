"""Assemble docs/benchmarks.md from the benchmark scripts' markdown results.

Run after the benchmarks: ``python benchmarks/make_docs.py``. The headline section is kept
in ``benchmarks/headline.md`` (written by hand from the results, since it interprets them);
the detailed sections are copied from ``benchmarks/results/*.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SECTIONS = [
    ("core.md", "Core engine (`python benchmarks/bench_core.py`)"),
    ("least_squares.md", "TbT vs TbV (`python benchmarks/least_squares_tbt_tbv.py`)"),
    ("optuna.md", "Optuna sampler overhead (`python benchmarks/bench_optuna.py`)"),
    ("ray.md", "Ray Tune searcher: throughput and overhead (`python benchmarks/bench_ray.py`)"),
    ("mnist_bench.md", "MNIST hypergradients (`python benchmarks/bench_mnist.py`)"),
    ("hypergrad.md", "Drop-in optimizers' cost (`python benchmarks/bench_hypergrad.py`)"),
    ("vector.md", "AdamW (lr, weight decay) on digits (`python benchmarks/bench_vector.py`)"),
    (
        "vector_mnist.md",
        "AdamW (lr, weight decay) on MNIST (`python benchmarks/bench_vector.py --task mnist`)",
    ),
    (
        "vector_mnist-layers.md",
        "SGD per-layer step sizes on MNIST (`python benchmarks/bench_vector.py --task "
        "mnist-layers`)",
    ),
    ("vector_far_start.md", "AdamW on digits from a far start (`bench_vector.py --start`)"),
    ("learned.md", "MLP-optimizer meta-training throughput (`python benchmarks/bench_learned.py`)"),
    ("bench.md", "All tuners on one meta-objective (`l2l-tune bench`)"),
]


def demote(markdown: str) -> str:
    """Drop the file's title and push its headings one level down."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines)


def relink(markdown: str) -> str:
    """Point links to files under benchmarks/results/ (e.g. plots) at them from docs/."""

    def fix(match: re.Match[str]) -> str:
        target = match.group(1)
        if (ROOT / "results" / target).is_file():
            return f"](../benchmarks/results/{target})"
        return match.group(0)

    return re.sub(r"\]\(([^):#]+)\)", fix, markdown)


def main() -> None:
    """Write docs/benchmarks.md."""
    parts = [(ROOT / "headline.md").read_text().rstrip(), ""]
    for name, title in SECTIONS:
        path = ROOT / "results" / name
        if path.exists():
            parts += [f"## {title}", "", relink(demote(path.read_text())).strip(), ""]
    out = ROOT.parent / "docs" / "benchmarks.md"
    out.write_text("\n".join(parts) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
