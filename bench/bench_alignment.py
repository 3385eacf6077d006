"""How much of a FLOPs cut can become time in ONNX Runtime on this CPU? (issue 5)

    .venv/bin/python -m bench.bench_alignment

ONNX Runtime computes convolutions in blocks of channels (`engine.runtime.channel_block`), so a
subnet's time follows its padded FLOPs, not its FLOPs. For each model, `round_to` and FLOPs
budget this takes every encoding of the search space (or a large random sample of it) under the
budget and prints the highest FLOPs / padded-FLOPs ratio (both relative to the parent) any of
them reaches: an upper bound, before per-operator overheads, on "speedup / FLOPs reduction".
No training, no timing: weights do not change costs.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from bench.common import RESULTS, command_line
from engine.config import ModelSpec
from engine.cost import CostModel
from engine.models import create_model
from engine.runtime import channel_block
from engine.space import build_space

CHUNK = 200_000


def encodings(space, limit: int, samples: int, seed: int):
    """Chunks of every encoding when there are at most `limit`, else `samples` random ones."""
    choices = [space.choices(i) for i in range(len(space.groups))]
    total = int(np.prod([len(c) for c in choices], dtype=float))
    if total <= limit:
        every = itertools.product(*choices)
        while chunk := list(itertools.islice(every, CHUNK)):
            yield np.array(chunk)
        return
    rng = np.random.default_rng(seed)
    for start in range(0, samples, CHUNK):
        n = min(CHUNK, samples - start)
        yield np.stack([rng.choice(c, n) for c in choices], 1)


def bounds(name: str, round_to: int, budgets, block: int, args) -> list[dict]:
    torch.manual_seed(args.seed)
    model = create_model(ModelSpec(name=name, weights="random"))
    example = torch.zeros(1, 3, 32, 32)
    space = build_space(model, example, round_to=round_to)
    cost = CostModel(model, space, example)
    parent_padded = cost.padded_flops([space.full()], block)[0]
    best = {b: (0.0, None, None) for b in budgets}
    seen = 0
    for chunk in encodings(space, args.limit, args.samples, args.seed):
        seen += len(chunk)
        flops = cost.costs(chunk)[0] / cost.parent_flops
        padded = cost.padded_flops(chunk, block) / parent_padded
        for b in budgets:
            ok = np.flatnonzero(flops <= b / 100)
            if len(ok):
                i = ok[np.argmax(flops[ok] / padded[ok])]
                if flops[i] / padded[i] > best[b][0]:
                    best[b] = (flops[i] / padded[i], flops[i], padded[i])
    choices = np.prod([len(space.choices(i)) for i in range(len(space.groups))], dtype=float)
    return [
        {
            "model": name,
            "round_to": round_to,
            "budget": b,
            "bound": best[b][0],
            "flops": best[b][1],
            "padded": best[b][2],
            "checked": seen,
            "space": choices,
        }
        for b in budgets
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2"])
    ap.add_argument("--round-to", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--budgets", type=float, nargs="+", default=[25, 50])
    ap.add_argument("--limit", type=int, default=20_000_000, help="check all up to this many")
    ap.add_argument("--samples", type=int, default=2_000_000, help="random ones, beyond it")
    ap.add_argument("--block", type=int, help="channel block (default: probed on this CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    block = args.block or channel_block()
    lines = [
        f"ONNX Runtime channel block: {block}",
        "",
        "| model | round_to | FLOPs budget | best FLOPs / padded FLOPs (upper bound on speedup / "
        "FLOPs reduction) | its FLOPs, padded FLOPs (share of parent) | encodings checked |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name, round_to in itertools.product(args.models, args.round_to):
        for r in bounds(name, round_to, args.budgets, block, args):
            reach = (
                f"**{r['bound']:.3f}** | {r['flops']:.3f}, {r['padded']:.3f}"
                if r["flops"] is not None
                else "no subnet reaches the budget |"
            )
            how = (
                "all"
                if r["checked"] >= r["space"]
                else f"{r['checked']:,} random of {r['space']:.3g}"
            )
            lines.append(f"| {name} | {round_to} | {r['budget']:g}% | {reach} | {how} |")
            print(lines[-1], flush=True)
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write(
                "\n## How much of a FLOPs cut can become time in ONNX Runtime (issue 5)\n\n"
                f"    {command_line('bench_alignment', args)}\n\n" + "\n".join(lines) + "\n"
            )


if __name__ == "__main__":
    main()
