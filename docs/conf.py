"""Sphinx configuration of the API reference (``nox -s docs``; warnings are errors there, so a docstring that
does not render fails the build)."""

import timm_sched_fix

project = "timm-sched-fix"
author = "timm-sched-fix contributors"
copyright = "timm-sched-fix contributors"
release = version = timm_sched_fix.__version__

extensions = ["sphinx.ext.autodoc"]
# The markdown pages of docs/ are read on GitHub; the reference is index.rst and api.rst.
exclude_patterns = ["_build", "*.md"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}


def _hide_internal_signature(app, what, name, obj, options, signature, return_annotation):
    """FixedScheduler is made by wrap(), never by its constructor: show no constructor arguments."""
    if name == "timm_sched_fix.FixedScheduler":
        return "", None
    return None


def setup(app):
    app.connect("autodoc-process-signature", _hide_internal_signature)
html_theme = "alabaster"
html_title = f"timm-sched-fix {release}"
