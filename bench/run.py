"""make bench: figures, printed.

1. `status` against the guide's own verification (bench/guide_verification.sh),
   on the same rig in the same run: median wall time of each, their ratio,
   and how many facts each verifies.
2. Start-up time of `version --client` (no cluster call), median of many runs.
3. The size of the plugin binary (release when built, else debug).

usage: run.py PLUGIN_BINARY  (with .rig/env sourced)
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_RUNS", "15"))


def timed(argv, runs=RUNS, **kw):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, **kw)
        samples.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise SystemExit(f"bench: {' '.join(map(str, argv))} failed:\n{out.stdout}{out.stderr}")
    return statistics.median(samples), out


def main():
    plugin = sys.argv[1]
    env = dict(os.environ, NO_COLOR="1", BENCH_TOKEN="ghp_bench", BENCH_DB="bench-password")
    alb = env["RIG_ALB_URL"]
    print("bench: resetting the rig and installing, once", file=sys.stderr)
    subprocess.run([str(ROOT / "rig/rig"), "reset"], check=True, env=env)
    subprocess.run([plugin, "install", "-y", "--namespaces", "sample",
                    "--registry-username", "bench", "--registry-password-env", "BENCH_TOKEN",
                    "--db-username", "bench", "--db-password-env", "BENCH_DB",
                    "--iam-policy-file", env["RIG_IAM_POLICY_FILE"],
                    "--lbc-chart-repo", env["RIG_CHART_REPO_URL"], "--chart-repo", env["RIG_CHART_REPO_URL"],
                    "--probe-url", alb], check=True, env=env, stdout=subprocess.DEVNULL)

    status_t, status_out = timed([plugin, "status", "--probe-url", alb, "-o", "json"], env=env)
    status_facts = len(json.loads(status_out.stdout)["checks"])
    guide_t, guide_out = timed(["bash", str(ROOT / "bench/guide_verification.sh"), "scalardb-graphql", alb], env=env)
    guide_facts = int(guide_out.stdout.strip().rsplit(" ", 1)[1])
    print(f"status vs the guide's verification ({RUNS} runs each, median wall time):")
    print(f"  kubectl scalardb-graphql status   {status_t * 1000:8.0f} ms   {status_facts} facts verified")
    print(f"  guide verification (kubectl+aws+curl) {guide_t * 1000:4.0f} ms   {guide_facts} facts verified")
    print(f"  ratio status/guide: {status_t / guide_t:.2f}; facts per second: status {status_facts / status_t:.0f}, guide {guide_facts / guide_t:.0f}")

    pod_t, _ = timed([plugin, "status", "--category", "probe", "-o", "json"], env=env)
    local_t, _ = timed([plugin, "status", "--category", "probe", "--probe-url", alb, "-o", "json"], env=env)
    print(f"the probe alone (status --category probe): from a Pod {pod_t * 1000:.0f} ms, "
          f"from this machine {local_t * 1000:.0f} ms (medians; the Pod's create-to-result is the difference)")

    start_t, _ = timed([plugin, "version", "--client"], runs=max(RUNS, 50), env=env)
    print(f"start-up: `version --client` median {start_t * 1000:.1f} ms over {max(RUNS, 50)} runs")
    for kind in ("release", "debug"):
        binary = Path(env.get("CARGO_TARGET_DIR", ROOT / "target")) / kind / "kubectl-scalardb_graphql"
        if binary.exists():
            print(f"binary size ({kind}): {binary.stat().st_size / 1024 / 1024:.1f} MiB ({binary})")
    subprocess.run([str(ROOT / "rig/rig"), "reset"], check=True, env=env, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
