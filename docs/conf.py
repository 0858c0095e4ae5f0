"""Sphinx configuration: API reference from the docstrings, notebooks rendered unexecuted.

Build (offline): python -m sphinx -W -b html docs build/docs
"""

project = "lstm_jax"
author = "lstm_jax developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # shapes and types are documented in the docstrings
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Options", "params_style")]  # the options every stack takes by name
nb_execution_mode = "off"  # notebooks are executed by the test suite, not by the docs build
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "alabaster"
suppress_warnings = ["myst.header"]
napoleon_use_ivar = True  # named-tuple fields are documented once, in "Attributes"
