#!/usr/bin/env python3
"""Alternating A/B rounds of `pyramidclip bench` for two binaries (dev-time tool).

A shared VM's speed drifts by more than most changes worth measuring, so the two binaries
run in alternating order (A B, B A, ...) and the medians are compared. Each run's figure is
the last "paired N%) of the ... peak" share it prints (the share against the peak measured
next to each batch) and its images/s or prompts/s.

    python3 scripts/ab_bench.py OLD NEW ROUNDS --what text --precision bf16 --seconds 8
"""
import re
import statistics
import subprocess
import sys


def run(exe, args):
    p = subprocess.run([exe, "bench", *args], capture_output=True, text=True)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        sys.exit(f"{exe} bench {' '.join(args)} failed:\n{out}")
    shares = re.findall(r"paired (\d+)%\) of the (\w+) peak", out)
    rates = re.findall(r": ([\d.]+) (?:images|prompts)/s", out)
    share = float(shares[-1][0]) if shares else float("nan")
    rate = float(rates[0]) if rates else float("nan")
    return share, rate


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    a, b, rounds, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    res = {a: [], b: []}
    for i in range(rounds):
        for exe in (a, b) if i % 2 == 0 else (b, a):
            share, rate = run(exe, args)
            res[exe].append((share, rate))
            print(f"round {i} {exe}: paired share {share:.0f}%, rate {rate}", flush=True)
    for exe in (a, b):
        shares = [s for s, _ in res[exe]]
        rates = [r for _, r in res[exe]]
        print(
            f"{exe}: share median {statistics.median(shares):.1f} mean {statistics.mean(shares):.1f}; "
            f"rate median {statistics.median(rates):.2f} mean {statistics.mean(rates):.2f}"
        )


if __name__ == "__main__":
    main()
