"""Bounces on Ray render workers against the in-process bounce, measured side by side in one run.

The demo song's first ``--seconds`` (its frames, parameters and bends) are rendered

- in this process (the bounce's own renderer, batches of ``--batch``), with all of torch's threads
  and with one (what a worker of one CPU gets);
- on a private local Ray with 1 worker, and with 2 workers (every port on 127.0.0.1);

each timed from the first batch sent to the last frame back (the workers' model loading is timed
apart, as it happens once per cluster). The overhead per batch and per frame is the 1-worker time
minus the one-thread in-process time, over the batches and frames. Then a worker is killed after
the first frame comes back; the time from the kill until every frame of its lost batches is back
(from the worker started in its place, its model loading included) is the recovery time.

    bendbridge bench cluster [--seconds 4] [--batch 8] [--model DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=8)
    return ap.parse_args(argv)


def _timed(source, todo, bp) -> tuple[float, list[int]]:
    t = time.perf_counter()
    got = [f.frame for f in source.render(todo, bp.positions, bp.params)]
    return time.perf_counter() - t, got


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    import os

    from bendbridge.bridge.cluster_frames import LOOPBACK_ONLY, ClusterFrames, ClusterSpec, start_local_ray

    os.environ.setdefault(LOOPBACK_ONLY, "0")  # before Ray is imported
    import ray

    from bendbridge.bridge.bounce import BounceSpec, plan_bounce
    from bendbridge.bridge.demo_song import write_demo
    from bendbridge.server.cluster_worker import RenderWorker
    from bendbridge.server.render.local_frames import local_rendering

    folder = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    paths = write_demo(folder)
    spec = BounceSpec(audio=paths["audio"], config=paths["config"], midi=paths["midi"], out=folder / "v.mp4",
                      end=str(args.seconds), batch=args.batch, model=args.model)  # fmt: skip
    bp = plan_bounce(spec)
    todo = list(range(len(bp.positions)))
    batches = -(-len(todo) // args.batch)
    import torch

    local = local_rendering(args.model)(bp.settings, bp.plan, args.batch)
    threads = torch.get_num_threads()
    in_process, _ = _timed(local, todo, bp)
    torch.set_num_threads(1)  # what one worker gets (Ray gives an actor of one CPU one thread)
    in_process_1, _ = _timed(local, todo, bp)
    torch.set_num_threads(threads)
    start_local_ray(2)
    rows = []
    try:
        for workers in (1, 2):
            t = time.perf_counter()
            source = ClusterFrames(
                ClusterSpec(None, workers), bp.settings, bp.plan, args.batch, args.model, worker=RenderWorker
            )
            ray.get([w.identity.remote() for w in source.workers])
            load = time.perf_counter() - t
            seconds, got = _timed(source, todo, bp)
            assert sorted(got) == todo
            rows.append((workers, load, seconds))
            source.close()
        source = ClusterFrames(
            ClusterSpec(None, 2, in_flight=1), bp.settings, bp.plan, args.batch, args.model, worker=RenderWorker
        )
        ray.get([w.identity.remote() for w in source.workers])
        victim, killed_at, recovered, seen = source.workers[0], None, None, []
        for frame in source.render(todo, bp.positions, bp.params):
            seen.append(frame.frame)
            if killed_at is None:
                ray.kill(victim)
                killed_at = time.perf_counter()
            lost = {i for batch in source.requeued for i in batch}
            if recovered is None and lost and lost <= set(seen):
                recovered = time.perf_counter() - killed_at  # every frame of the dead worker's batches is back
        assert sorted(seen) == todo
        source.close()
    finally:
        ray.shutdown()
    n = len(todo)
    print(f"{n} frames of the demo song in batches of {args.batch} ({batches} batches), side by side in one run:")
    print(f"  in this process        {in_process:7.2f} s  {n / in_process:6.2f} frames/s  ×1.00  ({threads} threads)")
    print(f"  in this process        {in_process_1:7.2f} s  {n / in_process_1:6.2f} frames/s  "
          f"×{in_process / in_process_1:.2f}  (1 thread, as one worker has)")  # fmt: skip
    for workers, load, seconds in rows:
        name = f"Ray, {workers} worker{'s' if workers > 1 else ' '}"
        print(f"  {name:<22} {seconds:7.2f} s  {n / seconds:6.2f} frames/s  ×{in_process / seconds:.2f}  "
              f"(workers' model loading {load:.1f} s, once)")  # fmt: skip
    one = rows[0][2]
    print(f"  overhead of a worker against one thread in process: {(one - in_process_1) / batches * 1000:+.0f} ms "
          f"a batch, {(one - in_process_1) / n * 1000:+.1f} ms a frame")  # fmt: skip
    if recovered is not None:
        print(f"  a killed worker's lost batches were all back {recovered:.1f} s after the kill")
    else:
        print("  the killed worker had no batch in flight")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
