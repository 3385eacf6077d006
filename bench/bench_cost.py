"""How long computing a subnet's FLOPs and params takes, against building and counting it.

    .venv/bin/python -m bench.bench_cost

Target (issue 3): under a millisecond per encoding, without building the network.
"""

import random
import statistics
import time

import torch

from engine.config import ModelSpec
from engine.cost import CostModel, measure
from engine.models import create_model
from engine.space import build_space, materialize

EXAMPLE = torch.zeros(1, 3, 32, 32)


def main(samples: int = 200) -> None:
    print("| model | groups | cost() median | cost() max | materialize + FlopCounterMode |")
    print("|---|---|---|---|---|")
    for name in ("resnet20", "resnet18", "mobilenet_v2"):
        model = create_model(ModelSpec(name=name, weights="random"))
        space = build_space(model, EXAMPLE)
        cost = CostModel(model, space, EXAMPLE)
        rng = random.Random(0)
        encodings = [
            tuple(rng.choice(space.choices(i)) for i in range(len(space.groups)))
            for _ in range(samples)
        ]
        times = []
        for enc in encodings:
            start = time.perf_counter()
            cost.cost(enc)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for enc in encodings[:5]:
            measure(materialize(model, space, enc, EXAMPLE), EXAMPLE)
        built = (time.perf_counter() - start) / 5
        print(
            f"| {name} | {len(space.groups)} | {1e6 * statistics.median(times):.0f} us | "
            f"{1e6 * max(times):.0f} us | {1e3 * built:.0f} ms |"
        )


if __name__ == "__main__":
    main()
