"""Sphinx configuration for bayeslin (the full site is built out in a later issue)."""

project = "bayeslin"
author = "bayeslin developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc"]
autosummary_generate = True
numpydoc_show_class_members = False
html_theme = "pydata_sphinx_theme"
exclude_patterns = ["_build"]
