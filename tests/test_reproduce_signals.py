"""`losslab reproduce --jobs 2` under signals: workers die with their parent (SIGKILL leaves no orphan),
SIGTERM unwinds like Ctrl-C (finished rows saved, one line, exit 143), and Ctrl-C prints no worker
traceback. The rows are stand-ins that sleep, registered in a child interpreter and run in forked
workers, so the test takes seconds."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")

SCRIPT = textwrap.dedent('''
    import dataclasses, functools, sys, time, types
    import losslab.experiments as E
    from losslab.experiments import ExperimentResult, Verdict, _registry, _runner

    def module(row_id, seconds, cost):
        m = types.ModuleType(f"fake_{row_id}")
        secs = seconds

        @dataclasses.dataclass(frozen=True)
        class Config:
            seconds: float = secs
            seed: int = 0

            @classmethod
            def quick(cls):
                return cls()

            @classmethod
            def full(cls):
                return cls()

        def run(config, *, cache_dir, work_dir, progress):
            progress("sleeping")
            time.sleep(config.seconds)
            return ExperimentResult.create(row_id, config, measurements={"slept": config.seconds},
                                           verdict=judge({}))

        def judge(m):
            return Verdict("inconclusive", "stand-in")

        m.ID, m.Config, m.run, m.judge, m.COST = row_id, Config, run, judge, {"quick": cost}
        return m

    _registry.EXPERIMENTS.clear()
    _registry.EXPERIMENTS.update({"A1": module("A1", 0.0, 900), "A2": module("A2", 300.0, 300),
                                  "A3": module("A3", 300.0, 300)})
    E.run_many = functools.partial(_runner.run_many, start_method="fork")
    from losslab.cli.main import main
    sys.exit(main(["reproduce", "A1", "A2", "A3", "--jobs", "2", "--out", sys.argv[1]]))
''')


def _children(pid):
    """Pids of every descendant of ``pid`` (from /proc/*/stat)."""
    parent_of = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent_of[int(d.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        nxt = {c for c, p in parent_of.items() if p in frontier and c not in out}
        out |= nxt
        frontier = nxt
    return out


def _communicate(proc, timeout=30):
    """``proc.communicate`` that kills the process (and closes its pipes) when it hangs."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"still running {timeout} s after the signal; stderr: {err[-2000:]}") from None


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(tmp_path):
    script = tmp_path / "fake_reproduce.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LOSSLAB_THREADS": "1"}
    # A shell without job control starts background commands with SIGINT ignored, and an ignored
    # SIGINT is inherited (Python then installs no Ctrl-C handler): give the child a terminal's default.
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        # A1 (scheduled first) finished and saved; A2 and A3 started in the two workers
        res = tmp_path / "out" / "results"
        started = {p.name[:2] for p in res.glob("A*")} if res.is_dir() else set()
        saved = list(res.glob("A1-*/result.json")) if res.is_dir() else []
        kids = _children(proc.pid)
        if len(kids) >= 2 and saved and {"A2", "A3"} <= started:
            time.sleep(1.0)
            return proc, _children(proc.pid)
        time.sleep(0.2)
    proc.kill()
    out, err = proc.communicate(timeout=10)
    raise AssertionError(f"the workers did not start: {err[-2000:]}")


def test_sigkill_leaves_no_orphan(tmp_path):
    proc, kids = _start(tmp_path)
    assert kids, "no worker process found"
    proc.kill()
    proc.communicate(timeout=10)
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    survivors = [k for k in kids if _alive(k)]
    assert not survivors, f"orphans alive 5 s after SIGKILL: {survivors}"


def test_sigterm_saves_finished_rows_and_exits_143(tmp_path):
    proc, kids = _start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = _communicate(proc)
    assert proc.returncode == 143, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("losslab:")]
    assert lines[-1].startswith("losslab: terminated (finished work is saved")
    assert "Traceback" not in err
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)]
    done = [json.loads(p.read_text()) for p in (tmp_path / "out" / "results").glob("*/result.json")]
    assert [d["id"] for d in done] == ["A1"]  # the finished row is saved; the killed ones are not


def test_ctrl_c_to_the_group_prints_no_worker_traceback(tmp_path):
    proc, kids = _start(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # the terminal sends SIGINT to the whole foreground group
    out, err = _communicate(proc)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "losslab: interrupted" in err
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)]


def test_signals_wait_for_a_safe_point_and_reach_the_previous_handler():
    from losslab.experiments._runner import _DeferredSignals

    seen = []

    def term(signum, frame):
        seen.append(signum)
        raise RuntimeError("term handler")

    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored when run in the background
    before_term = signal.signal(signal.SIGTERM, term)
    try:
        with pytest.raises(KeyboardInterrupt):
            with _DeferredSignals() as sig:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # recorded, not raised: code here runs on
                reached = True
                sig.check()
        assert reached
        with pytest.raises(RuntimeError, match="term handler"):
            with _DeferredSignals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
            # not checked inside: delivered on leaving the block
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGTERM, before_term)
        signal.signal(signal.SIGINT, before_int)
