"""Scenes per second of the scene generator on one core (generation only, no writing).

Run: ``PYTHONPATH=src python benchmarks/scenes_speed.py [N]``. Sources and backgrounds are
loaded before the clock starts; each task makes N scenes (default 300).
"""

from __future__ import annotations

import sys
import time

from salience.data.scenes import SceneDataset


def scenes_per_second(task: str, n: int) -> float:
    dataset = SceneDataset(n, task, seed=0)
    dataset.scene(0)
    start = time.perf_counter()
    for i in range(n):
        dataset.scene(i)
    return n / (time.perf_counter() - start)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for task, size in (("detection", 256), ("classification", 224)):
        print(f"{task} {size}x{size}: {scenes_per_second(task, n):.0f} scenes/s ({n} scenes, one process)")
