"""Progress reporting for ``verbose=True`` fits.

A fit's evidence loop calls its callback once per evidence (EM) step with the
current hyperparameters and the solver's diagnostics. :class:`EvidenceProgress`
turns those calls into a tqdm progress bar when tqdm is installed (it is an
optional dependency, in the ``examples`` extra) and the output can redraw a
bar (a terminal or a Jupyter kernel), and into plain log lines otherwise: no
tqdm, or output captured into a log, CI or a sphinx-gallery page, where a
bar's carriage returns would pile up into one long line.
"""

import sys
import time

import numpy as np

__all__ = ["EvidenceProgress"]


def _load_tqdm():
    """Return tqdm's plain (terminal) progress bar class, or None without tqdm.

    ``tqdm.auto`` is avoided on purpose: in a notebook without ipywidgets it
    warns instead of drawing, and the plain bar works everywhere.
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _can_redraw(file):
    """Whether ``file`` shows a redrawn bar as one line: a terminal, or a notebook's output."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # closed file
        return False


def _max_residual(result):
    norms = getattr(result, "residual_norms", None)
    if norms is None or np.size(norms) == 0:
        return 0.0
    return float(np.max(np.asarray(norms)))


def _format(value):
    """A hyperparameter for display: one number, or one per parameter group."""
    if np.ndim(value) == 0:
        return f"{float(value):.4g}"
    return np.array2string(np.asarray(value, dtype=float), precision=4)


class EvidenceProgress:
    """Report the evidence steps of a fit, with tqdm if available.

    Parameters
    ----------
    solver : str
        Name of the solver, shown with its iteration count and residual.
    use_tqdm : bool, optional
        Force (True) or forbid (False) the tqdm bar. By default the bar is
        used when tqdm can be imported and ``file`` is a terminal or the
        process is a Jupyter kernel.
    file : file-like, optional
        Where to write; standard output by default, for the bar as for the
        plain lines, as scikit-learn's ``verbose`` output (so notebooks,
        doctests and sphinx-gallery show it too).

    Notes
    -----
    The instance is the callback: ``progress(iteration, alpha, lambda_,
    gamma, solver_result)``, the signature of the ``callback`` argument of
    :func:`bayeslin.evidence.fit_evidence` (``lambda_`` may hold one value
    per parameter group, and ``solver_result`` may be None for a direct
    solve). Call :meth:`close` when the fit
    ends; an instance that is garbage collected closes itself.
    """

    def __init__(self, solver, *, use_tqdm=None, file=None):
        self.solver = solver
        # Looked up now, not at import: pytest and sphinx-gallery swap sys.stdout.
        self.file = sys.stdout if file is None else file
        self.start = time.perf_counter()
        self.n_calls = 0
        if use_tqdm is None:
            use_tqdm = _can_redraw(self.file) and _load_tqdm() is not None
        tqdm = _load_tqdm() if use_tqdm else None
        if use_tqdm and tqdm is None:
            raise ImportError("use_tqdm=True needs tqdm (pip install tqdm)")
        # Whether a tqdm bar (rather than plain lines) reports the steps.
        self.uses_tqdm = tqdm is not None
        self.bar = None
        if tqdm is not None:
            # No total: the loop stops at convergence, usually long before
            # max_iter, so a total would only show a meaningless ETA.
            self.bar = tqdm(desc=f"bayeslin {solver}", unit="step", file=self.file, leave=True)

    def __call__(self, it, alpha, lam, gamma, result):
        self.n_calls += 1
        n_iter = int(getattr(result, "n_iter", 0))
        residual = _max_residual(result)
        if self.bar is not None:
            postfix = {"alpha": _format(alpha), "lambda": _format(lam), "gamma": _format(gamma)}
            # The exact solver has no iterations or residuals to show.
            if n_iter:
                postfix[f"{self.solver} its"] = n_iter
                postfix["residual"] = f"{residual:.1e}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)
            return
        passes = getattr(result, "info", {}).get("passes")
        shown = f"{n_iter} its" + ("" if passes is None else f" ({passes:.0f} passes)")
        solver = f"  {self.solver}: {shown}, max rel. residual {residual:.1e}" if n_iter else ""
        print(
            f"[bayeslin] iter {it:3d}  alpha={_format(alpha)}  lambda={_format(lam)}  gamma={_format(gamma)}"
            f"{solver}  ({time.perf_counter() - self.start:.2f}s)",
            file=self.file,
            flush=True,
        )

    def close(self):
        """Finish the bar (no-op for plain lines or when already closed)."""
        bar, self.bar = self.bar, None
        if bar is not None:
            bar.close()

    def __del__(self):
        # The evidence loop has no end-of-fit hook; the estimator drops its
        # callback when fit returns, which closes the bar here.
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to draw on
            pass
