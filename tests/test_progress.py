"""Progress reporting of ``verbose=True`` fits: tqdm bar when installed, plain lines otherwise."""

import io
import sys

import numpy as np
import pytest

from bayeslin import BayesianLinearRegressor
from bayeslin._progress import EvidenceProgress
from bayeslin.solvers import SolverResult


def _problem(n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    return X, y


class _Terminal(io.StringIO):
    """A text stream that claims to be a terminal, where a bar can be redrawn."""

    def isatty(self):
        return True


@pytest.fixture
def no_tqdm(monkeypatch):
    """Make ``import tqdm`` fail, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "tqdm", None)


def _cg_result(n_iter=7, residual=3e-7):
    return SolverResult(None, n_iter, np.array([residual / 3, residual]), True)


def test_plain_lines_without_tqdm(no_tqdm):
    out = io.StringIO()
    progress = EvidenceProgress("cg", file=out)
    assert not progress.uses_tqdm
    progress(0, 1.5, 0.25, 3.0, _cg_result())
    progress(1, 1.6, 0.26, 3.1, _cg_result(n_iter=2, residual=5e-8))
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[bayeslin] iter   0")
    assert "alpha=1.5" in lines[0] and "lambda=0.25" in lines[0] and "gamma=3" in lines[0]
    assert "cg: 7 its" in lines[0] and "3.0e-07" in lines[0]
    assert "cg: 2 its" in lines[1] and "5.0e-08" in lines[1]


def test_plain_lines_omit_solver_of_direct_solve(no_tqdm):
    out = io.StringIO()
    EvidenceProgress("exact", file=out)(0, 1.0, 1.0, 2.0, SolverResult(None, 0, np.zeros(1), True))
    assert "its" not in out.getvalue() and "gamma=2" in out.getvalue()


def test_use_tqdm_true_without_tqdm_raises(no_tqdm):
    with pytest.raises(ImportError, match="tqdm"):
        EvidenceProgress("cg", use_tqdm=True)


def test_tqdm_bar():
    pytest.importorskip("tqdm")
    out = _Terminal()
    progress = EvidenceProgress("cg", file=out)
    assert progress.uses_tqdm
    progress(0, 1.5, 0.25, 3.0, _cg_result())
    progress(1, 1.6, 0.26, 3.1, _cg_result(n_iter=2, residual=5e-8))
    progress.close()
    progress.close()  # idempotent
    # The final state is drawn on close: two steps, the last postfix.
    final = out.getvalue().split("\r")[-1]
    assert "bayeslin cg: 2step" in final
    assert "alpha=1.6" in final and "lambda=0.26" in final and "gamma=3.1" in final
    assert "cg its=2" in final and "residual=5.0e-08" in final
    assert "[bayeslin] iter" not in out.getvalue()


def test_use_tqdm_false_forces_plain_lines():
    out = io.StringIO()
    progress = EvidenceProgress("sgd", use_tqdm=False, file=out)
    assert not progress.uses_tqdm
    progress(0, 1.0, 1.0, 2.0, _cg_result())
    assert out.getvalue().startswith("[bayeslin] iter")


@pytest.mark.parametrize("solver", ["exact", "cg", "sgd"])
def test_verbose_fit_without_tqdm_prints_one_line_per_step(solver, no_tqdm, capsys):
    X, y = _problem()
    est = BayesianLinearRegressor(solver=solver, verbose=True, random_state=0).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[bayeslin]")]
    assert len(lines) == est.n_iter_
    assert all("alpha=" in line and "lambda=" in line and "gamma=" in line for line in lines)
    if solver != "exact":
        assert all(f"{solver}: " in line and "residual" in line for line in lines)


def test_captured_output_gets_plain_lines_even_with_tqdm(monkeypatch):
    # Logs, CI and sphinx-gallery capture output that cannot redraw a bar.
    pytest.importorskip("tqdm")
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    out = io.StringIO()
    progress = EvidenceProgress("cg", file=out)
    assert not progress.uses_tqdm
    progress(0, 1.0, 1.0, 2.0, _cg_result())
    assert out.getvalue().startswith("[bayeslin] iter")


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_verbose_fit_with_tqdm_on_a_terminal_draws_a_bar(solver, monkeypatch):
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    X, y = _problem()
    est = BayesianLinearRegressor(solver=solver, verbose=True, random_state=0).fit(X, y)
    out = terminal.getvalue()
    # The bar is closed when fit drops its callback, so its final state is out.
    final = out.split("\r")[-1]
    assert f"bayeslin {solver}" in final
    assert f"bayeslin {solver}: {est.n_iter_}step" in final
    assert "alpha=" in final and "lambda=" in final


def test_not_verbose_prints_nothing(capsys):
    X, y = _problem()
    BayesianLinearRegressor(solver="cg", random_state=0).fit(X, y)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
