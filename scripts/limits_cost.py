"""What rate limits add to a request, from a run of `scripts/bench --limits`.

For each scenario and concurrency: the gateway's CPU per request with every key limited
minus the same build's without limits, repeat by repeat (the two are measured back to
back), then the median and the mean with its standard error. One difference is as noisy
as the machine; compare the mean of many repeats with a goal.
"""

import json
import statistics
import sys


def main(path: str) -> int:
    with open(path) as f:
        run = json.load(f)
    # (scenario, concurrency) -> repeat -> target -> point
    points: dict = {}
    for p in run["points"]:
        if p["target"] in ("unlimited", "limited"):
            at = points.setdefault((p["scenario"], p["concurrency"]), {})
            at.setdefault(p["rep"], {})[p["target"]] = p
    if not points:
        print(f"limits_cost: no unlimited/limited points in {path}")
        return 1
    print(f"\nWhat rate limits add (run {run['run_id']}): CPU µs per request, limited minus unlimited")
    print("| scenario | c | per repeat | median | mean ± s.e. | RPS limited / unlimited |")
    print("|---|---|---|---|---|---|")
    for (scenario, conc), repeats in sorted(points.items()):
        pairs = [(r["unlimited"], r["limited"]) for _, r in sorted(repeats.items()) if len(r) == 2]
        diffs = [
            lim["cpu_us_per_req"]["target"] - unl["cpu_us_per_req"]["target"]
            for unl, lim in pairs
            if lim["cpu_us_per_req"]["target"] is not None and unl["cpu_us_per_req"]["target"] is not None
        ]
        if not diffs:
            continue
        ratio = statistics.median(lim["rps"] / unl["rps"] for unl, lim in pairs)
        error = f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.1f}" if len(diffs) > 1 else "?"
        listed = " ".join(f"{d:+.1f}" for d in diffs)
        print(
            f"| {scenario} | {conc} | {listed} | {statistics.median(diffs):+.1f} "
            f"| {statistics.fmean(diffs):+.1f} ± {error} | {ratio:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
