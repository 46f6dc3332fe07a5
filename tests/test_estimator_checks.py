"""scikit-learn's estimator checks for every solver of BayesianLinearRegressor."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from bayeslin import BayesianLinearRegressor

ESTIMATORS = [BayesianLinearRegressor(solver=solver, random_state=0) for solver in ["exact", "cg", "sgd"]]

_ITERATIVE_SAMPLE_WEIGHT_REASON = (
    "iterative solvers stop at a relative residual solver_tol (cg: 1e-6, sgd: 1e-4) and "
    "draw their posterior-sample noise row by row, so weighted and repeated rows give "
    "different Monte Carlo estimates of the effective dimension: the fits agree to "
    "solver and sampling accuracy, not to the check's rtol=1e-7"
)


def _expected_failed_checks(estimator):
    if estimator.solver in ("cg", "sgd"):
        return {
            "check_sample_weight_equivalence_on_dense_data": _ITERATIVE_SAMPLE_WEIGHT_REASON,
            "check_sample_weight_equivalence_on_sparse_data": _ITERATIVE_SAMPLE_WEIGHT_REASON,
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
