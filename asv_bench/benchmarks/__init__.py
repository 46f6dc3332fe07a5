"""asv benchmarks of bayeslin (see asv_bench/asv.conf.json).

CuPy input (``bench_gpu.py``) goes through scikit-learn's array API dispatch,
which needs SciPy's array API support switched on before SciPy is first
imported. asv imports every benchmark module into one process before forking,
so the switch is made here, for the whole suite, unless already set. It only
tightens SciPy's input checks; NumPy inputs take the same code paths.
"""

import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")
