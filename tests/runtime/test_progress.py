"""semscale.runtime.progress: logs and bars on stderr, quiet third parties, native stderr noise dropped."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

import semscale.runtime.progress as sp


@pytest.fixture(autouse=True)
def _restore_loggers():
    names = ["semscale", *sp.QUIET_LOGGERS]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    yield
    for n, (handlers, level, propagate) in saved.items():
        log = logging.getLogger(n)
        log.handlers[:], log.level, log.propagate = handlers, level, propagate


def test_logs_go_to_stderr(capsys):
    sp.setup_logging(0)
    logging.getLogger("semscale.test").info("hello from the log")
    logging.getLogger("semscale.test").debug("hidden at INFO")
    out, err = capsys.readouterr()
    assert out == ""
    assert "hello from the log" in err and "hidden at INFO" not in err
    assert err.splitlines() == ["INFO    hello from the log"]  # not a terminal: plain lines, not rich's
    sp.setup_logging(1)
    logging.getLogger("semscale.test").debug("shown with -v")
    assert "shown with -v" in capsys.readouterr().err


def test_progress_bar_goes_to_stderr(monkeypatch, capsys):
    monkeypatch.setenv("SEMSCALE_PROGRESS", "1")
    assert list(sp.progress(range(5), description="counting")) == [0, 1, 2, 3, 4]
    out, err = capsys.readouterr()
    assert out == ""
    assert "counting" in err and "5/5" in err
    monkeypatch.setenv("SEMSCALE_PROGRESS", "0")
    assert list(sp.progress(iter(range(3)))) == [0, 1, 2]
    assert capsys.readouterr() == ("", "")


def test_dask_progress_goes_to_stderr(monkeypatch, capsys):
    import dask.array as da

    monkeypatch.setenv("SEMSCALE_PROGRESS", "1")
    with sp.dask_progress("summing"):
        total = da.ones((8, 8), chunks=4).sum().compute(scheduler="sync")
    assert total == 64
    out, err = capsys.readouterr()
    assert out == "" and "summing" in err


def test_quiet_third_party_unless_verbose(monkeypatch):
    for key in sp.QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # a user's own setting wins
    sp.quiet_third_party(0)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "warning"
    assert logging.getLogger("distributed").level == logging.WARNING
    assert logging.getLogger("tensorflow").level == logging.ERROR
    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED")
    logging.getLogger("distributed").setLevel(logging.INFO)
    sp.quiet_third_party(1)
    assert "DASK_LOGGING__DISTRIBUTED" not in os.environ
    assert logging.getLogger("distributed").level == logging.INFO


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in sp.QUIET_ENV}  # as a user starts it
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=300, check=True)


def test_filter_native_stderr_drops_absl_lines_from_native_code_and_children():
    done = _run("""
        import os, subprocess, sys
        from semscale.runtime.progress import filter_native_stderr
        with filter_native_stderr():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"I0000 00:00:1796167379.217962    2850 port.cc:153] oneDNN custom operations are on.\\n")
            os.write(2, b"native line kept\\n")
            sys.stderr.write("python line kept\\n")
            subprocess.run([sys.executable, "-c", "import os; os.write(2, b'W0000 00:00:17.2 9 x.cc:1] child noise\\\\n'); os.write(2, b'child line kept\\\\n')"])
            os.write(2, b"E0000 00:00:1796167387.019602    2850 cuda_platform.cc:52] a real error is kept\\n")
            print("stdout untouched")
        sys.stderr.write("after the block\\n")
    """)
    assert done.stdout == "stdout untouched\n"
    kept = done.stderr.splitlines()
    assert sorted(kept) == sorted(["native line kept", "python line kept", "child line kept",
                                   "E0000 00:00:1796167387.019602    2850 cuda_platform.cc:52] a real error is kept",
                                   "after the block"])


@pytest.mark.slow
def test_tensorflow_start_up_is_quiet():
    """Importing TensorFlow and running an op, as the CLI sets it up: no start-up chatter on stderr."""
    code = """
        from semscale.runtime.progress import filter_native_stderr, setup_logging
        setup_logging(0)
        with filter_native_stderr():
            import tensorflow as tf
            print(int(tf.constant(20) + 22))
    """
    done = _run(code)
    assert done.stdout.strip() == "42"
    assert "oneDNN" not in done.stderr and "absl::InitializeLog" not in done.stderr, done.stderr
    assert "cuInit" not in done.stderr
