"""Clocks for benches on a shared machine: this process's CPU time on one torch thread, and wall time.

Why: on a machine other jobs load, wall time counts the time our process waits for a core, which
swings 2-4x from round to round; the CPU time the process itself used does not count that wait. It is
only sound with torch on ONE thread: with several, idle OpenMP workers spin-wait for the next parallel
region and that spinning is counted as CPU time, more of it the busier the machine. So ``--clock cpu``
(the default for CPU benches) pins torch to one thread; ``--clock wall`` keeps torch's threads and
measures what a user waits. Both clocks are always measured and printed; the chosen one makes the
ratios. CPU time still moves with what runs beside us on the same core (caches, hyperthreads), so
variants stay interleaved round by round and the figures are medians of ratios to a baseline taken in
the same process. On a CPU the bench's process keeps freed memory as the training scripts' own process
does (library/train/own_process.py), so page faults, the part of CPU time other jobs' memory pressure
moves most, stay out of the figures.

    from clock import add_clock_options, Clocks
    add_clock_options(parser)                 # --clock cpu|wall, --threads N
    clocks = Clocks.from_args(args, device)   # sets torch's threads
    sample = clocks.measure(fn)               # Sample(wall=..., cpu=...)
    clocks.report(times, baseline="base")     # both clocks, ratios, per-round spread, load average
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass

CLOCKS = ("cpu", "wall")


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # user + system
    sys: float = 0.0  # of which system (page faults, mostly): where memory pressure from other jobs shows

    def on(self, clock: str) -> float:
        return self.cpu if clock == "cpu" else self.wall


def add_clock_options(parser, default: str | None = None) -> None:
    """``--clock`` and ``--threads`` on a bench's parser (default clock: cpu on a CPU, wall on CUDA)."""
    parser.add_argument("--clock", choices=CLOCKS, default=default,
                        help="which clock makes the ratios: cpu = this process's CPU time on one torch thread "
                             "(robust to other jobs on the machine; default on a CPU), wall = elapsed time "
                             "(default on CUDA). Both are printed.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default 1 with --clock cpu, torch's own default with --clock wall)")


def _keep_freed_memory() -> bool:
    """What the training scripts' own process does on a CPU (library/train/own_process.py): the bench measures
    the step as the trainer runs it, and page faults (the noisiest part of CPU time here) stay out."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from library.train.own_process import keep_freed_memory

    return keep_freed_memory()


def _system_time() -> float:
    """This process's system CPU time (getrusage: the user/system split is the kernel's estimate; the
    total that process_time gives is exact); 0 where there is no getrusage (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _load() -> float:
    """The 1-minute load average (nan where the OS has none: Windows)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


class LoadWatch:
    """Samples the 1-minute load average every few seconds while a bench runs: its range goes in the report."""

    def __init__(self, every: float = 5.0):
        self.samples = [_load()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every):
        while not self._stop.wait(every):
            self.samples.append(_load())

    def text(self) -> str:
        now = _load()
        lo, hi = min(self.samples + [now]), max(self.samples + [now])
        return f"load average (1 min) during the run {lo:.1f}-{hi:.1f}, median {statistics.median(self.samples + [now]):.1f}"


class Clocks:
    """The chosen clock, torch's thread count, and the measuring and reporting that go with them."""

    def __init__(self, clock: str, threads: int, device: str = "cpu", keep_freed: bool = True):
        if clock not in CLOCKS:
            raise SystemExit(f"--clock {clock}: choose one of {', '.join(CLOCKS)}")
        if clock == "cpu" and device != "cpu":
            raise SystemExit(f"--clock cpu on {device}: the work runs on the device, not in this process's CPU "
                             "time; use --clock wall")
        if clock == "cpu" and threads != 1:
            raise SystemExit(f"--clock cpu with --threads {threads}: idle OpenMP threads spin-wait and count as CPU "
                             "time, more so on a busy machine; use --threads 1 or --clock wall")
        import torch

        self.clock, self.device = clock, device
        self.keep_freed = keep_freed and device == "cpu" and _keep_freed_memory()
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # for child processes
        self.threads = torch.get_num_threads()
        self.load = LoadWatch()

    @classmethod
    def from_args(cls, args, device: str = "cpu") -> "Clocks":
        clock = args.clock or ("cpu" if device == "cpu" else "wall")
        threads = args.threads or (1 if clock == "cpu" else None)
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        return cls(clock, threads, device)

    def measure(self, fn, *a, **kw) -> Sample:
        """Run ``fn`` once; its wall time and this process's CPU time (all threads, user + system)."""
        sys_before, cpu, wall = _system_time(), time.process_time(), time.perf_counter()
        fn(*a, **kw)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Sample(wall=wall, cpu=cpu, sys=_system_time() - sys_before)

    def interleaved(self, steps: dict, rounds: int, warmup: int = 0) -> dict:
        """``warmup`` untimed calls of every step, then ``rounds`` rounds that measure each step once in turn
        (interleaved, so a change in the machine's load falls on every variant alike): name -> [Sample]."""
        for _ in range(warmup):
            for fn in steps.values():
                fn()
        samples = {name: [] for name in steps}
        for _ in range(rounds):
            for name, fn in steps.items():
                samples[name].append(self.measure(fn))
        return samples

    def header(self) -> str:
        return (f"clock: {self.clock} ({'CPU time of this process' if self.clock == 'cpu' else 'wall time'}), "
                f"torch threads {self.threads}, {os.cpu_count()} CPUs, freed memory "
                f"{'kept (as the training scripts do on a CPU)' if self.keep_freed else 'returned (glibc default)'}; "
                f"{self.load.text()}")

    def report(self, times: dict, baseline: str, label=str, unit: str = "s", scale: float = 1.0) -> list[str]:
        """One line per variant: median on both clocks, ratio to ``baseline`` on each, and the spread of
        the per-round ratios (round i's variant over round i's baseline) on each, plus every round."""
        lines = [self.header(),
                 f"{'variant':>12} {'cpu ' + unit:>9} {'x cpu':>6} {'round spread':>13}   "
                 f"{'wall ' + unit:>9} {'x wall':>6} {'round spread':>13}"]
        base = times[baseline]
        for name, samples in times.items():
            cells = []
            for clock in ("cpu", "wall"):
                med = statistics.median(s.on(clock) for s in samples) * scale
                ref = statistics.median(s.on(clock) for s in base) * scale
                per_round = [s.on(clock) / b.on(clock) for s, b in zip(samples, base) if b.on(clock) > 0]
                spread = f"{min(per_round):.2f}-{max(per_round):.2f}" if per_round else "-"
                cells.append(f"{med:9.3f} {med / ref:6.3f} {spread:>13}")
            lines.append(f"{label(name):>12} {cells[0]}   {cells[1]}")
        every = [s for v in times.values() for s in v]
        lines.append(f"system time (page faults...) {100 * sum(s.sys for s in every) / max(sum(s.cpu for s in every), 1e-9):.1f} % "
                     "of the CPU time measured")
        lines.append("rounds (cpu/wall " + unit + "): " + "; ".join(
            f"{label(n)}: " + ", ".join(f"{s.cpu * scale:.2f}/{s.wall * scale:.2f}" for s in v) for n, v in times.items()))
        return lines
