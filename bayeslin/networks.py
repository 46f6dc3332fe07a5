"""Network adapters: what the linearised Laplace estimators need from a trained network.

:class:`~bayeslin.LinearisedLaplaceClassifier` and
:class:`~bayeslin.LinearisedLaplaceRegressor` talk to their network through
one small interface, :class:`NetworkAdapter`:

- ``jacobian(X)``: the Jacobian of the network's outputs with respect to the
  linearised parameters at the inputs ``X``, as a matrix-free feature
  operator (``matmat``, ``rmatmat``, ``jvp_outputs``, ``vjp_outputs``,
  ``take_rows``, ``take_observations``, ``row_sq_norms``, ``col_sq_norms``,
  ``gram``, ``dense``, ``with_transform``, ``groups``, ``outputs``), on the
  device where the network lives;
- ``parameter_vector(jac)``: the linearised parameters ``theta`` as one
  vector in the operator's namespace, in the operator's column order;
- ``group_names``: one name per prior group (``prior_structure='layerwise'``).

Two implementations exist: scikit-learn's
:class:`~sklearn.neural_network.MLPClassifier` /
:class:`~sklearn.neural_network.MLPRegressor` (NumPy, or CuPy with
``device='cuda'``), and PyTorch modules: a skorch
``NeuralNetClassifier`` / ``NeuralNetRegressor``, or a plain fitted
:class:`torch.nn.Module` wrapped in :class:`TorchModule`, which says what its
output means. PyTorch and skorch are optional (``pip install bayeslin[torch]``)
and imported only when such a network is given.
"""

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from ._backend import asarray_on, resolve_device

__all__ = ["NetworkAdapter", "TorchJacobian", "TorchModule", "adapt_network", "fit_network", "is_torch_network"]

_OUTPUTS = ("logits", "probabilities", "regression")


class TorchModule:
    """A fitted :class:`torch.nn.Module` and what its output means.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network, called as ``module(X)`` on a batch ``X`` of
        shape ``(b, n_features)`` (reshape inside ``forward`` for images).
        Any architecture; the Laplace estimators put it in eval mode
        (dropout off, normalisation layers on their running statistics).
    output : {'logits', 'probabilities', 'regression'}, default=None
        ``'logits'``: class scores for a softmax (one logit: binary,
        logistic); ``'probabilities'``: class probabilities, linearised in
        log space; ``'regression'``: one or several regression outputs.
        ``None``: ``'logits'`` in a classifier, ``'regression'`` in a
        regressor.
    classes : array-like of shape (n_classes,), default=None
        The label of every output of a classifier (default:
        ``0 .. n_outputs - 1``, or ``[0, 1]`` for one logit).
    dtype : torch.dtype, default=None
        Dtype of the Jacobian products and the solvers: ``None`` is float64
        on a CPU (as the linear model computes) and the module's own dtype
        on a GPU. ``torch.float32`` on a CPU is faster (PyTorch's float64
        convolutions are slow there); set ``solver_tol`` to about 1e-4 then.

    Examples
    --------
    >>> import torch
    >>> from bayeslin import LinearisedLaplaceClassifier
    >>> from bayeslin.networks import TorchModule
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> clf = LinearisedLaplaceClassifier(TorchModule(net, output="logits"))
    """

    def __init__(self, module, output=None, classes=None, dtype=None):
        self.module = module
        self.output = output
        self.classes = classes
        self.dtype = dtype

    def get_params(self, deep=True):
        """Parameters, so that ``sklearn.base.clone`` copies the wrapper (and deep-copies the module)."""
        return {"module": self.module, "output": self.output, "classes": self.classes, "dtype": self.dtype}

    def set_params(self, **params):
        """Set parameters (scikit-learn's protocol)."""
        for key, value in params.items():
            setattr(self, key, value)
        return self


class NetworkAdapter:
    """Interface between a trained network and the linearised Laplace estimators.

    Attributes
    ----------
    network : object
        The fitted network (the estimators' ``estimator_``).
    group_names : list of str
        One name per prior group (parameter tensor, module or layer).
    classes_ : ndarray or None
        Class labels, in output order (classifiers).
    """

    network = None
    group_names = ()
    classes_ = None

    def jacobian(self, X, *, dtype=None):
        """Return the Jacobian operator at the inputs ``X``."""
        raise NotImplementedError

    def parameter_vector(self, jac):
        """Return ``theta`` in ``jac``'s namespace and column order, shape (n_params,)."""
        raise NotImplementedError

    def from_input(self, X):
        """``X`` where the network computes (NumPy, CuPy or a torch tensor on the network's device)."""
        raise NotImplementedError


class _SklearnMLPAdapter(NetworkAdapter):
    """scikit-learn MLPs, linearised in all their weights and biases (NumPy, or CuPy on a GPU)."""

    def __init__(self, mlp, device="cpu"):
        self.network = mlp
        self.device = device
        self.group_names = [f"layer {i}" for i in range(len(mlp.coefs_))]
        self.classes_ = getattr(mlp, "classes_", None)

    def check_classifier(self):
        mlp = self.network
        if getattr(mlp, "out_activation_", None) not in ("softmax", "logistic") or (
            mlp.out_activation_ == "logistic" and mlp.n_outputs_ != 1
        ):
            raise ValueError("The network was fitted for multi-label targets, which are not supported.")

    def from_input(self, X):
        if self.device == "cpu":
            return np.asarray(X)
        xp, dev = resolve_device(self.device)
        return asarray_on(X, xp, dev)

    def jacobian(self, X, *, dtype=None):
        from .operators.mlp_jacobian import MLPJacobian

        return MLPJacobian(self.network, self.from_input(X), dtype=dtype)

    def parameter_vector(self, jac):
        from .operators.mlp_jacobian import flatten_params

        return asarray_on(flatten_params(self.network), jac.xp, jac.device, jac.dtype)


class _LogProbabilities:
    """Log of a module's probabilities, as skorch's NLLLoss path takes it (picklable)."""

    def __init__(self, eps):
        self.eps = eps

    def __call__(self, p):
        import torch

        return torch.log(p + self.eps)


class _TorchAdapter(NetworkAdapter):
    """A torch module, linearised in the parameters ``parameters`` names (all trainable ones by default)."""

    def __init__(self, network, module, output, classes=None, parameters=None, batch_size=None, device=None,
                 dtype=None):
        import torch

        self.network = network
        self.module = module.eval()
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}.")
        self.output = output
        self.output_map = _LogProbabilities(torch.finfo(torch.float32).eps) if output == "probabilities" else None
        self.batch_size = batch_size
        self.names, groups = _select_parameters(module, parameters)
        self.group_names = [name for name, _ in groups]
        self._group_sizes = [sum(int(np.prod(dict(module.named_parameters())[p].shape)) for p in members) for _, members in groups]
        first = next(iter(module.parameters()))
        if device is not None and device != "cpu" and torch.device(device) != first.device:
            raise ValueError(
                f"device={device!r}, but the torch network lives on {first.device}: the Laplace inference runs "
                "where the network is; move the module (module.to(device)) instead."
            )
        self.torch_device = first.device
        # On a GPU the network's float32 is kept (throughput, memory); on a
        # CPU the products run in float64, as the linear model does.
        self.dtype = dtype or (first.dtype if first.device.type != "cpu" else torch.float64)
        self._classes = None if classes is None else np.asarray(classes)

    @property
    def classes_(self):
        if self._classes is not None:
            return self._classes
        return None

    def set_classes(self, n_outputs):
        """Default labels for ``n_outputs`` logits: ``[0, 1]`` for one, else ``0 .. n_outputs - 1``."""
        if self._classes is None:
            self._classes = np.arange(2 if n_outputs == 1 else n_outputs)
        return self._classes

    def check_classifier(self):
        if self.output == "regression":
            raise ValueError("A regression network (output='regression') cannot be used by a classifier.")

    def from_input(self, X):
        import torch

        if isinstance(X, torch.Tensor):
            return X.to(device=self.torch_device, dtype=self.dtype)
        return torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.torch_device)

    def jacobian(self, X, *, dtype=None):
        from .operators.torch_jacobian import TorchJacobian

        groups, start = [], 0
        for size in self._group_sizes:
            groups.append((start, start + size))
            start += size
        return TorchJacobian(
            self.module,
            self.from_input(X),
            self.names,
            output_map=self.output_map,
            groups=groups,
            dtype=self.dtype if dtype is None else dtype,
            batch_size=self.batch_size,
        )

    def parameter_vector(self, jac):
        return jac.parameter_vector()


def _select_parameters(module, parameters):
    """``(names, groups)``: the linearised parameter names and ``[(group name, member names)]``.

    ``None``: every parameter with ``requires_grad``, one group per module
    owning parameters. Otherwise each entry names a module (all its
    parameters, recursively) or a parameter tensor, and is one group.
    """
    params = [(name, p) for name, p in module.named_parameters()]
    if parameters is None:
        groups = []
        for name, p in params:
            if not p.requires_grad:
                continue
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            if groups and groups[-1][0] == owner:
                groups[-1][1].append(name)
            else:
                groups.append((owner, [name]))
        if not groups:
            raise ValueError("The torch module has no trainable parameters (requires_grad) to linearise.")
        return [n for _, members in groups for n in members], groups
    if isinstance(parameters, str):
        parameters = [parameters]
    groups, taken = [], {}
    for entry in parameters:
        members = [name for name, _ in params if name == entry or name.startswith(entry + ".") or entry == ""]
        if not members:
            modules = [n for n, _ in module.named_modules() if n]
            raise ValueError(
                f"parameters: {entry!r} names no parameter or module of the network; its modules are {modules} "
                f"and its parameters {[n for n, _ in params]}."
            )
        for name in members:
            if name in taken:
                raise ValueError(f"parameters: {name!r} is selected by both {taken[name]!r} and {entry!r}.")
            taken[name] = entry
        groups.append((entry, members))
    return [n for _, members in groups for n in members], groups


def is_torch_network(obj):
    """Whether ``obj`` is a torch module, a :class:`TorchModule` or a skorch net (without importing torch)."""
    if isinstance(obj, TorchModule):
        return True
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__ == "Module":
            return True
        if cls.__module__.startswith("skorch") and cls.__name__ == "NeuralNet":
            return True
    return False


def _is_skorch(obj):
    return any(cls.__module__.startswith("skorch") and cls.__name__ == "NeuralNet" for cls in type(obj).__mro__)


def _is_skorch_classifier(obj):
    return any(cls.__module__.startswith("skorch") and cls.__name__ == "NeuralNetClassifier" for cls in type(obj).__mro__)


def _unwrap(estimator):
    """``(network, frozen)``: the network inside a FrozenEstimator, or the estimator."""
    from sklearn.frozen import FrozenEstimator

    if isinstance(estimator, FrozenEstimator):
        return estimator.estimator, True
    return estimator, False


def _skorch_output(net, task):
    """What a skorch net's module outputs, from its criterion."""
    import torch

    if task == "regressor":
        return "regression"
    criterion = getattr(net, "criterion_", None) or net.criterion
    kind = criterion if isinstance(criterion, type) else type(criterion)
    if issubclass(kind, torch.nn.CrossEntropyLoss):
        return "logits"
    if issubclass(kind, torch.nn.NLLLoss):
        return "probabilities"
    raise ValueError(
        f"The skorch classifier's criterion is {kind.__name__}: the Laplace classifier takes CrossEntropyLoss "
        "(the module outputs logits) or NLLLoss (skorch's default: the module outputs probabilities)."
    )


def fit_network(estimator, default, task, X, y, rng, allowed):
    """Fit a clone of the network (or take a frozen or plain torch one as is).

    Parameters
    ----------
    estimator : estimator, FrozenEstimator, TorchModule, torch.nn.Module or None
    default : callable
        Returns the scikit-learn network used when ``estimator`` is None.
    task : {'classifier', 'regressor'}
    X, y : ndarray
        Validated training data (classifier labels as given).
    rng : numpy.random.RandomState
    allowed : tuple of type
        The scikit-learn network classes this task takes.

    Returns
    -------
    network : object
        The fitted network.
    fitted_here : bool
        Whether this call fitted it (so its labels are ``y``'s).
    """
    if estimator is None:
        net = default()
        net.set_params(random_state=rng.randint(np.iinfo(np.int32).max))
        return net.fit(X, y), True
    net, frozen = _unwrap(estimator)
    if isinstance(net, TorchModule) or is_torch_network(net) and not _is_skorch(net):
        if frozen:
            raise TypeError("Pass a plain torch module as it is (or in TorchModule); FrozenEstimator takes estimators.")
        return net, False
    if _is_skorch(net):
        want = "NeuralNetClassifier" if task == "classifier" else "NeuralNetRegressor"
        if not any(cls.__name__ == want for cls in type(net).__mro__):
            raise TypeError(f"A skorch network for this estimator must be a {want}, got {type(net).__name__}.")
        if frozen:
            net.check_is_fitted()
            return net, False
        net = clone(net)
        Xf = np.asarray(X, dtype=np.float32)
        if task == "classifier":
            # Labels as output indices: the module's output k is class k.
            yf = np.searchsorted(np.unique(y), y).astype(np.int64)
        else:
            yf = np.asarray(y, dtype=np.float32)
            yf = yf[:, None] if yf.ndim == 1 else yf
        if net.train_split is not None:
            # skorch's default holds out a fifth of the data for validation
            # scores; the posterior is fitted on all of it.
            net.set_params(train_split=None)
        import torch

        # skorch draws the initial weights and minibatch order from torch's
        # global generator: seed a private fork of it from random_state, so
        # that a fit is reproducible without touching the caller's stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
            return net.fit(Xf, yf), True
    if not isinstance(net, allowed):
        names = " or ".join(cls.__name__ for cls in allowed)
        raise TypeError(
            f"estimator must be a {names}, a skorch net, a torch.nn.Module or TorchModule "
            f"(scikit-learn and skorch networks optionally wrapped in FrozenEstimator), got {type(net).__name__}."
        )
    if frozen:
        check_is_fitted(net)
        if getattr(net, "n_features_in_", X.shape[1]) != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, but the frozen network was fitted with {net.n_features_in_}."
            )
        return net, False
    return clone(net).fit(X, y), True


def adapt_network(network, task, *, parameters=None, batch_size=None, device="cpu", classes=None):
    """Return the :class:`NetworkAdapter` of a fitted network.

    Parameters
    ----------
    network : fitted MLP, skorch net, torch.nn.Module or TorchModule
    task : {'classifier', 'regressor'}
    parameters : str or list of str, optional
        Names of the modules or parameter tensors to linearise (torch
        networks only; default: all trainable parameters).
    batch_size : int, optional
        Observations per block of Jacobian products (torch networks).
    device : str, default='cpu'
        Where a scikit-learn network's Laplace inference runs.
    classes : array-like, optional
        Class labels in output order, overriding the network's own.

    Returns
    -------
    NetworkAdapter
    """
    default_output = "logits" if task == "classifier" else "regression"
    if isinstance(network, TorchModule):
        return _TorchAdapter(network, network.module, network.output or default_output,
                             network.classes if classes is None else classes, parameters, batch_size, device,
                             network.dtype)
    if _is_skorch(network):
        if classes is None and _is_skorch_classifier(network):
            classes = network.classes_
        return _TorchAdapter(network, network.module_, _skorch_output(network, task), classes, parameters,
                             batch_size, device)
    if is_torch_network(network):
        return _TorchAdapter(network, network, default_output, classes, parameters, batch_size, device)
    if parameters is not None:
        raise ValueError(
            "parameters= selects the parameters of a torch network; a scikit-learn MLP is linearised in all "
            "its weights and biases."
        )
    adapter = _SklearnMLPAdapter(network, device)
    if classes is not None:
        adapter.classes_ = np.asarray(classes)
    return adapter


def __getattr__(name):
    # The torch operator is public here, imported only when asked for, so
    # that this module loads without PyTorch.
    if name == "TorchJacobian":
        from .operators.torch_jacobian import TorchJacobian

        return TorchJacobian
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
