#!/usr/bin/env python3
"""`make test`: every test binary, side by side on several rigs, then a table of what took how long.

    scripts/test.py [--rigs N] [BINARY ...]

1. Builds the test binaries (`cargo test --no-run`) while the rig's tools are
   built or found (`rig/tools.py`): on a fresh machine the two overlap. A
   binary's tests start (step 3) as soon as cargo has it and the plugin's
   binary it runs, beside the rest of the build.
2. Brings up N rigs side by side (`.rig`, `.rig.2`, …, each its own state
   directory, ports and cluster; RIGS, default 3), or finds them up: as soon
   as the tools are there, while the test binaries still build.
3. Runs the tests as jobs on free rigs (RIG_STATE), longest first by this
   machine's last times: a test that took more than a minute is a job of its
   own, the rest of its binary one job (one test at a time, named with
   `--exact`). Binaries that need no rig run beside them. After a job that
   failed, its rig must be healthy before the next: it is reset if not, and
   rebuilt if a reset does not heal it, so one failing test fails only itself.
4. Prints each binary's wall and CPU time, the ten slowest tests and the
   machine's CPU use over the run; exits 1 if anything failed.

The rigs stay up for the next run (`make rig-down` stops them all). Each
binary's whole output is in `.rig/test-logs/<binary>.log`.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RIG = ROOT / "rig" / "rig"
LOGS = ROOT / ".rig" / "test-logs"
# Each binary's last wall time on this machine, kept beside the warm target directory.
TIMES = Path.home() / ".cache" / "kubectl-scalardb-graphql" / "test-times.json"
# Wall times (seconds) for the order of a first run on this machine (no times kept yet): a warm
# run's, but for dist, whose arm64 build from an empty cache takes one lane for most of ten
# minutes; started last, it was a fresh machine's whole tail.
EXPECTED = {"dist": 900, "uninstall": 300, "shared_cluster": 270, "real_controller": 255, "controller_failures": 220,
            "status": 220, "faults": 215, "cluster": 215, "install": 175, "rig_alb_controller": 160}
# Test binaries renamed (new name: old name). TIMES may still hold a binary's times under its old
# name: they are read as the new name's (and saved under it), so its tests keep their jobs and order.
RENAMED = {"rig_stand_ins": "rig", "rig_alb_controller": "alb_controller", "rig_pod_runner": "pod_runner"}


def log(msg):
    print(f"test: {msg}", file=sys.stderr, flush=True)


def cpu_ticks():
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def build(ready):
    """Builds the test executables, calling ready(name, executable) for each as soon as cargo has
    it (the crate's own unit tests under the name `unit`); False if the build failed. The build runs
    niced: the tests already running beside it (and their rigs) come first for the cores."""
    argv = ["nice", "-n", "10", "cargo", "test", "--no-run", "--message-format=json-render-diagnostics"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # The integration tests run the plugin's binary (CARGO_BIN_EXE_...), which cargo may still be
    # linking when it reports them, or not have started rebuilding: the crate has no library, so a
    # change under src/ leaves them fresh, reported at once. Until the plugin is reported too, they
    # wait: started earlier, they would run a stale plugin, or none.
    plugin = None
    waiting = []
    for line in proc.stdout:
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        kind = msg["target"]["kind"][0]
        if not msg["profile"]["test"]:
            if kind == "bin":
                plugin = msg["executable"]
                for name, exe in waiting:
                    ready(name, exe)
                waiting.clear()
        elif kind == "test" and plugin is None:
            waiting.append((msg["target"]["name"], msg["executable"]))
        else:
            ready(msg["target"]["name"] if kind == "test" else "unit", msg["executable"])
    return proc.wait() == 0 and plugin is not None and not waiting


def load_history(binaries):
    """This machine's last times (TIMES), a renamed binary's under its new name."""
    history = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times, tests = history.setdefault("binaries", {}), history.setdefault("tests", {})
    for new, old in RENAMED.items():
        if old in binaries:  # a binary of that name exists again: its times are its own
            continue
        if old in times:
            times.setdefault(new, times[old])
            del times[old]
        for key in [k for k in tests if k.startswith(f"{old}::")]:
            tests.setdefault(f"{new}::{key[len(old) + 2:]}", tests[key])
            del tests[key]
    return history


def needs_rig(name):
    source = ROOT / "tests" / f"{name}.rs"
    return source.exists() and "rig()" in source.read_text()


class Rig:
    def __init__(self, index):
        self.index = index
        self.state = ROOT / (".rig" if index == 1 else f".rig.{index}")
        self.env = dict(os.environ, RIG_STATE=str(self.state))

    def run(self, *args, quiet=True):
        return subprocess.run([str(RIG), *args], env=self.env, cwd=ROOT, capture_output=quiet, text=True)

    def stale(self):
        """Up, but started before the rig's code last changed: its processes run the old code."""
        started = self.state / "supervisor.pid"
        if not started.exists():
            return False
        code = [p for p in (ROOT / "rig").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        return any(p.stat().st_mtime > started.stat().st_mtime for p in code)

    def up(self):
        if self.stale():
            log(f"rig {self.index} runs older code than rig/ holds: rebuilding it")
            self.run("down")
        result = self.run("up")
        if result.returncode != 0:
            raise RuntimeError(f"rig {self.index} did not come up:\n{result.stderr[-3000:]}")

    def healthy(self):
        return self.run("status").returncode == 0

    def heal(self):
        """Healthy, or reset, or rebuilt: what a binary may start from."""
        if self.healthy():
            return "healthy"
        self.run("reset")
        if self.healthy():
            return "reset"
        log(f"rig {self.index} stays unhealthy after a reset: rebuilding it")
        self.run("down")
        self.up()
        return "rebuilt"


class Result:
    def __init__(self, name):
        self.name, self.rig, self.wall, self.cpu = name, "-", 0.0, 0.0
        self.passed = self.failed = 0
        self.ok = False
        self.tests = []  # (seconds, name, outcome)
        self.note = ""
        self.jobs = 0

    def add(self, other):
        """A job's result into its binary's."""
        self.rig = other.rig if self.rig in ("-", other.rig) else "*"
        self.wall += other.wall
        self.cpu += other.cpu
        self.passed += other.passed
        self.failed += other.failed
        self.ok = (self.ok or not self.jobs) and other.ok
        self.tests += other.tests
        self.jobs += 1


def listed_tests(exe):
    """The tests a binary holds (`--list --format terse`: `name: test`)."""
    out = subprocess.run([exe, "--list", "--format", "terse"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, CARGO_MANIFEST_DIR=str(ROOT)))
    return [line[:-len(": test")] for line in out.stdout.splitlines() if line.endswith(": test")]


# A test expected to take longer than this is a job of its own.
OWN_JOB = 60


TEST_START = re.compile(rb"test (\S+) \.\.\. ")
TEST_END = re.compile(rb"(ok|FAILED|ignored)\n")


def run_binary(name, exe, rig, tests=None, part=0):
    """Runs a test binary (only `tests`, when given), one test at a time, timing each from its output."""
    result = Result(name)
    result.rig = str(rig.index) if rig else "-"
    env = dict(rig.env if rig else os.environ, CARGO_MANIFEST_DIR=str(ROOT), RUST_BACKTRACE="1")
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    argv = [exe, "--test-threads=1"] + (["--exact", *tests] if tests else [])
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buffer, current = b"", None
    with open(LOGS / f"{name}{'.' + str(part) if part else ''}.log", "wb") as out:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            out.write(chunk)
            out.flush()
            buffer += chunk
            now = time.monotonic()
            while True:
                if current is None:
                    m = TEST_START.search(buffer)
                    if not m:
                        buffer = buffer[-4096:]
                        break
                    current = (m.group(1).decode(), now)
                    buffer = buffer[m.end():]
                else:
                    m = TEST_END.match(buffer)
                    if not m:
                        # Output between the name and the outcome (a test that prints): keep looking.
                        m = TEST_END.search(buffer)
                        if not m or TEST_START.search(buffer[:m.start()]):
                            break
                    outcome = m.group(1).decode()
                    result.tests.append((now - current[1], f"{name}::{current[0]}", outcome))
                    result.passed += outcome == "ok"
                    result.failed += outcome == "FAILED"
                    current = None
                    buffer = buffer[m.end():]
    _, status, usage = os.wait4(proc.pid, 0)
    result.wall = time.monotonic() - started
    result.cpu = usage.ru_utime + usage.ru_stime
    result.ok = os.waitstatus_to_exitcode(status) == 0
    return result


def main():
    args = sys.argv[1:]
    rigs = int(os.environ.get("RIGS", "3"))
    if args[:1] == ["--rigs"]:
        rigs, args = int(args[1]), args[2:]
    started = time.monotonic()
    busy0, total0 = cpu_ticks()

    log("building the test binaries, and the rig's tools beside them; the rigs come up once the tools are there, "
        "and each binary's tests start as soon as it is built")
    every_binary = {p.stem for p in (ROOT / "tests").glob("*.rs")} | {"unit"}
    unknown = [a for a in args if a not in every_binary]
    if unknown:
        raise SystemExit(f"test: no test binary {', '.join(unknown)} (there are: {', '.join(sorted(every_binary))})")
    named = args or sorted(every_binary)
    # How many rigs: the binaries named (each source file says whether it needs a rig), known before the build.
    rigs = max(1, min(rigs, sum(needs_rig(b) for b in named)))
    pool = [Rig(i) for i in range(1, rigs + 1)]
    errors = []
    times = {}
    rigs_ready = threading.Event()

    def tools_then_rigs():
        tools = subprocess.run([sys.executable, str(ROOT / "rig" / "tools.py")], cwd=ROOT, stdout=subprocess.DEVNULL)
        if tools.returncode != 0:
            errors.append("the rig's tools did not build")
        else:
            log(f"bringing up {rigs} rig(s) side by side")
            threads = [threading.Thread(target=lambda r=r: errors.append(f"rig {r.index} did not come up")
                                        if not _up(r) else None) for r in pool]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        times["rigs"] = time.monotonic() - started
        rigs_ready.set()

    history = load_history(every_binary)
    tests_history = history.get("tests", {})
    binaries = {}  # name: executable, as cargo makes them
    queue = []  # (expected seconds, binary, tests or None for all, part), longest first
    rigless_queue = []
    lock = threading.Condition()
    building = [True]
    parts = {}
    results = []

    def ready(name, exe):
        """A binary cargo has built: its jobs join the queue (when it was asked for)."""
        if name not in named or name in binaries:
            return
        jobs = []
        if needs_rig(name):
            tests = listed_tests(exe)
            known = {t: tests_history[f"{name}::{t}"] for t in tests if f"{name}::{t}" in tests_history}
            if len(known) < len(tests):  # not timed here yet: the whole binary, by its expected time
                jobs.append((history.get("binaries", {}).get(name, EXPECTED.get(name, 60)), name, None, 0))
            else:
                own = [t for t in tests if known[t] > OWN_JOB]
                rest = [t for t in tests if known[t] <= OWN_JOB]
                for i, t in enumerate(own, 1):
                    jobs.append((known[t], name, [t], i))
                if rest:
                    jobs.append((sum(known[t] for t in rest), name, rest, len(own) + 1 if own else 0))
        with lock:
            binaries[name] = exe
            if needs_rig(name):
                queue.extend(jobs)
                queue.sort(key=lambda j: j[0], reverse=True)
            else:
                rigless_queue.append(name)
            lock.notify_all()

    def record(r):
        with lock:
            if r.name not in parts:
                parts[r.name] = Result(r.name)
                results.append(parts[r.name])
            parts[r.name].add(r)

    def next_job(jobs):
        """The next job of `jobs`, waiting while the build may add one; None when there is none left."""
        with lock:
            while not jobs and building[0]:
                lock.wait()
            return jobs.pop(0) if jobs and not errors else None

    def lane(rig):
        rigs_ready.wait()
        failed_last = False
        while (job := next_job(queue)) is not None:
            _, name, tests, part = job
            # A failed job may have left its rig broken; a passing one left it as it found it.
            state = rig.heal() if failed_last else "trusted"
            what = name if tests is None else f"{name} ({len(tests)} test{'s' if len(tests) > 1 else ''})"
            log(f"[rig {rig.index}] {what} (rig {state})")
            r = run_binary(name, binaries[name], rig, tests, part)
            failed_last = not r.ok
            log(f"[rig {rig.index}] {what}: {r.passed} passed, {r.failed} failed in {r.wall:.0f}s")
            record(r)

    def rigless():
        while (name := next_job(rigless_queue)) is not None:
            r = run_binary(name, binaries[name], None)
            log(f"[no rig] {name}: {r.passed} passed, {r.failed} failed in {r.wall:.0f}s")
            record(r)

    workers = [threading.Thread(target=tools_then_rigs)] + \
        [threading.Thread(target=lane, args=(r,)) for r in pool] + [threading.Thread(target=rigless)]
    for w in workers:
        w.start()
    built_ok = build(ready)
    times["build"] = time.monotonic() - started
    with lock:
        building[0] = False
        if not built_ok:
            errors.append("the test binaries did not build")
        lock.notify_all()
    if not built_ok:
        log("the test binaries did not build: the jobs already running finish, no other starts")
    for w in workers:
        w.join()
    if errors:
        raise SystemExit(f"test: {'; '.join(errors)}")
    missing = [n for n in named if n not in binaries]
    if missing:
        raise SystemExit(f"test: cargo built no test binary {', '.join(missing)}")

    busy1, total1 = cpu_ticks()
    wall = time.monotonic() - started
    report(results, wall, times["build"], times["rigs"], rigs, (busy1 - busy0) / max(1, total1 - total0))
    history.setdefault("binaries", {}).update({r.name: round(r.wall) for r in results if r.ok})
    history.setdefault("tests", {}).update({t: round(s, 1) for r in results for s, t, o in r.tests if o == "ok"})
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    TIMES.write_text(json.dumps(history, indent=1, sort_keys=True) + "\n")
    failed = [r for r in results if not r.ok]
    for r in failed:
        for log_file in sorted(LOGS.glob(f"{r.name}.*log")) + [LOGS / f"{r.name}.log"]:
            if not log_file.exists() or "FAILED" not in (text := log_file.read_text(errors="replace")):
                continue
            print(f"\n===== {r.name} failed (whole output: {log_file}); its last lines:")
            print("\n".join(text.splitlines()[-80:]))
    return 1 if failed else 0


def _up(rig):
    try:
        rig.up()
        return True
    except RuntimeError as e:
        log(str(e))
        return False


def minutes(s):
    return f"{int(s // 60)}m{s % 60:04.1f}s"


def report(results, wall, built, rigs_up, rigs, busy):
    """The table; `built` and `rigs_up`: when the build ended and the rigs were up, from the start."""
    results = sorted(results, key=lambda r: r.wall, reverse=True)
    print("\ntest binary          rig  passed  failed  result     wall      cpu   (wall and cpu: summed over its jobs; rig *: several)")
    for r in results:
        print(f"{r.name:<20} {r.rig:>3}  {r.passed:>6}  {r.failed:>6}  {'ok' if r.ok else 'FAILED':<6} "
              f"{r.wall:>7.1f}s {r.cpu:>7.1f}s")
    tests = sorted((t for r in results for t in r.tests), reverse=True)[:10]
    print("\nthe ten slowest tests:")
    for seconds, name, outcome in tests:
        print(f"  {seconds:7.1f}s  {name}{'' if outcome == 'ok' else '  ' + outcome}")
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    print(f"\n{passed} passed, {failed} failed, {len(results)} binaries on {rigs} rig(s) in {minutes(wall)} "
          f"(the build done at {minutes(built)}, the rigs up at {minutes(rigs_up)}, tests running from then on); "
          f"the machine's {os.cpu_count()} cores were {busy:.0%} busy")


if __name__ == "__main__":
    sys.exit(main())
