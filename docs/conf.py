"""Sphinx configuration of the documentation site (``nox -s docs``; warnings are errors there, so a page, a link
or a docstring that does not render fails the build). Markdown pages are read by MyST; nothing is fetched from the
network (no intersphinx), so the site builds offline."""

import timm_sched_fix

project = "timm-sched-fix"
author = "timm-sched-fix contributors"
copyright = "timm-sched-fix contributors"
release = version = timm_sched_fix.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
# "#section" links of the Markdown pages (also read on GitHub) resolve to headings down to ###
myst_heading_anchors = 3
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
