"""What a worker's loop thread did while a timer was late: its own work, a wait for a
core (and which tasks had it), or a sleep that ended late.

Reads the probe's file (``sitecustomize.py`` beside this one) and ``perf script`` of a
``perf record -a -k CLOCK_MONOTONIC -e sched:sched_switch -e sched:sched_wakeup``
taken meanwhile. For each late tick, from its due time to when it ran:

- ``ran``: the thread was on a core, so the loop was busy with its own callbacks;
- ``waited``: it was runnable and other tasks had its core (named, with their time);
- ``slept``: it was in ``epoll_wait`` and woke up after the due time, ``woke late``
  after it;
- ``of which collector``: the part of ``ran`` in the collector's passes (the probe
  notes each pass over 1 ms).

    perf record -a -k CLOCK_MONOTONIC -e sched:sched_switch -e sched:sched_wakeup \\
        -o perf.data -- sleep 45
    perf script -i perf.data -F time,cpu,event,trace > sched.txt
    python3 bench/late_ticks/who_ran.py /tmp/ticks-PID.txt sched.txt

The windows can also be answers: ``bench_upload_latency.py --dump DIR`` writes the
uploads' slow answers in the same format (their ``tid`` line taken from the probe's
file). The last lines sum all windows, and whose tasks had the core.
"""

from __future__ import annotations

import collections
import itertools
import re
import sys

SWITCH = re.compile(
    r"\[(\d+)\]\s+([\d.]+): sched:sched_switch: prev_comm=(.+?) prev_pid=(\d+) prev_prio=\d+"
    r" prev_state=(\S+) ==> next_comm=(.+?) next_pid=(\d+)"
)
WAKEUP = re.compile(r"\s([\d.]+): sched:sched_wakeup: comm=.+? pid=(\d+) ")


def main(ticks_path: str, sched_path: str) -> None:
    tid = ""
    ticks: list[tuple[float, float, float]] = []
    passes: list[tuple[int, float, float]] = []  # the collector's: generation, start, end
    with open(ticks_path) as lines:
        for line in lines:
            words = line.split()
            if line.startswith("tid "):
                tid = words[1]
            elif line.startswith("late "):
                ticks.append((float(words[1]), float(words[4]), float(words[6])))
            elif line.startswith("gc "):
                passes.append((int(words[1]), float(words[3]), float(words[5])))
    # the thread's states as intervals: (start, end, state, who had its core)
    spans: list[tuple[float, float, str, str]] = []
    wakeups: list[float] = []
    current: tuple[float, str, str] | None = None
    runs_on: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    with open(sched_path) as lines:
        for line in lines:
            woke = WAKEUP.search(line)
            if woke:
                if woke.group(2) == tid:
                    moment = float(woke.group(1))
                    wakeups.append(moment)
                    if current is not None and current[1] == "slept":  # runnable from here
                        spans.append((current[0], moment, "slept", current[2]))
                        current = (moment, "waited", current[2])
                continue
            switch = SWITCH.search(line)
            if not switch:
                continue
            cpu, at, _, prev, state, name, nxt = switch.groups()
            moment = float(at)
            runs_on[cpu].append((moment, f"{name}:{nxt}"))
            if tid in (nxt, prev):
                if current is not None:
                    spans.append((current[0], moment, current[1], cpu))
                if nxt == tid:
                    current = (moment, "ran", cpu)
                else:
                    current = (moment, "waited" if state.startswith("R") else "slept", cpu)
    if not spans:
        sys.exit(f"no switch of thread {tid} in {sched_path}")
    first, last = spans[0][0], spans[-1][1]
    overall: collections.Counter[str] = collections.Counter()
    everyone: collections.Counter[str] = collections.Counter()
    windows = 0
    for late, due, ran in ticks:
        if due < first or ran > last:
            continue
        totals: collections.Counter[str] = collections.Counter()
        others: collections.Counter[str] = collections.Counter()
        for start, end, state, cpu in spans:
            low, high = max(start, due), min(end, ran)
            if high <= low:
                continue
            totals[state] += high - low
            if state == "waited":
                timeline = runs_on[cpu]
                for (at, who), (until, _) in itertools.pairwise(timeline):
                    overlap = min(until, high) - max(at, low)
                    if overlap > 0 and not who.endswith(f":{tid}"):
                        others[who] += overlap
        windows += 1
        overall.update(totals)
        everyone.update(others)
        parts = [f"{state} {totals[state] * 1e3:.1f}" for state in ("ran", "waited", "slept")]
        woken = [w for w in wakeups if due <= w <= ran]
        extra = ""
        if totals["slept"] and woken:
            extra = f"; woke late {(woken[0] - due) * 1e3:.1f}"
        # a pass that ended in the window held the loop for its whole length
        held = [(g, end - start) for g, start, end in passes if due - 0.02 <= end <= ran]
        if held:
            extra += "; collector " + ", ".join(f"gen {g} {d * 1e3:.1f}" for g, d in held)
        who = ", ".join(f"{name} {seconds * 1e3:.1f}" for name, seconds in others.most_common(3))
        had = f"; its core had: {who}" if who else ""
        print(f"late {late:.1f} ms at {due:.3f}: {', '.join(parts)} ms{extra}{had}")
    if windows:  # the windows' sums: several late answers may share a stretch of time
        parts = [f"{state} {overall[state] * 1e3:.1f}" for state in ("ran", "waited", "slept")]
        print(f"{windows} windows in all: {', '.join(parts)} ms")
        names: collections.Counter[str] = collections.Counter()
        for who, seconds in everyone.items():
            names[who.rsplit(":", 1)[0]] += seconds
        top = ", ".join(f"{name} {seconds * 1e3:.1f}" for name, seconds in names.most_common(8))
        print(f"  its core had: {top}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
