"""Sphinx configuration for bayeslin.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` after
``pip install ".[docs]"``: warnings are errors, and sphinx-gallery executes
every ``examples/plot_*.py`` (each must run offline, on data shipped inside
an installed package).
"""

import os
import sys
import warnings

import matplotlib

# Document the checkout the docs sit in, not whatever bayeslin is installed.
sys.path.insert(0, os.path.abspath(".."))
matplotlib.use("agg")

import bayeslin  # noqa: E402

project = "bayeslin"
author = "bayeslin developers"
copyright = "bayeslin developers"
release = bayeslin.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "pydata_sphinx_theme"
html_title = "bayeslin"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
templates_path = ["_templates"]
exclude_patterns = ["_build", "generated/*.examples", "sg_execution_times.rst"]

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Every plot_*.py is executed (the digits / linearised Laplace example
    # joins automatically when examples/plot_laplace_digits.py lands).
    "filename_pattern": r"/plot_",
    # quickstart.py stays a plain script (README, tests); not in the gallery.
    "ignore_pattern": r"quickstart\.py|__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    # A failing example fails the build (also without -W).
    "abort_on_example_error": True,
    "show_memory": False,
    "plot_gallery": "True",
    # Mini-galleries of the examples that use each documented name.
    "doc_module": ("bayeslin",),
    "backreferences_dir": "generated",
}

# tqdm bars of verbose fits and run-time notices of third-party libraries
# must not reach Sphinx's warning stream.
warnings.filterwarnings("ignore", category=UserWarning, message=".*non-interactive.*")


def _skip_metadata_requests(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods.

    They are inherited from scikit-learn's metadata routing, and their
    docstrings reference scikit-learn's glossary, which -W cannot resolve here.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)
