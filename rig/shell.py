"""The tests' way into the rig: one long-lived process per test binary that runs
`rig/rig` commands (reset, snapshot, dataplane, status, ...) and AWS CLI command
lines in-process, one after another. Each would otherwise start an interpreter
and import boto3, the Kubernetes client or the AWS CLI's models first: a second
or more per call on a loaded machine, hundreds of calls per suite. The commands
are the same code as `rig/rig CMD` and `aws ARGS` run; only the start-up is shared.

Protocol, one JSON array per line on stdin: ["rig", CMD, ARGS...] or ["aws", ARGS...].
Answer, one JSON object per line on stdout: {"code": N, "stdout": "...", "stderr": "..."}.
It exits at the end of its input, that is when the test binary exits.

usage: shell.py  (run by the rig's Python, with the rig's environment)
"""

import contextlib
import io
import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rig  # noqa: E402

AWS_DRIVER = None


def aws(args):
    global AWS_DRIVER
    from awscli.clidriver import create_clidriver
    if any(a.startswith("modify-") and a.endswith("-attribute") for a in args[:2]):
        # These commands' customizations register argument handlers on the driver's session that
        # break every later command of that driver: they get a driver of their own.
        return create_clidriver().main(args)
    if AWS_DRIVER is None:
        AWS_DRIVER = create_clidriver()
    return AWS_DRIVER.main(args)


def answer(request):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if request[0] == "rig":
                rig.run(request[1:])
            elif request[0] == "aws":
                code = aws(request[1:])
            else:
                raise SystemExit(f"shell: unknown request {request[0]!r}")
        except SystemExit as e:
            # As the interpreter ends on it: a message goes to stderr with code 1.
            if isinstance(e.code, int):
                code = e.code
            elif e.code is not None:
                print(e.code, file=sys.stderr)
                code = 1
        except Exception:
            traceback.print_exc()
            code = 1
    return {"code": code or 0, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main():
    for line in sys.stdin:
        reply = answer(json.loads(line))
        sys.__stdout__.write(json.dumps(reply) + "\n")
        sys.__stdout__.flush()


if __name__ == "__main__":
    main()
