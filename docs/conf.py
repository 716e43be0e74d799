"""Sphinx configuration of the lessons' website (built by docs/build_site.py, `make site`).

Offline by design: notebooks are rendered from their committed outputs (no execution), and
MathJax, RequireJS and the widgets' HTML manager are served from the site's own _static/
folder (build_site.py copies them from node_modules/), never from a CDN.
"""

from sparsegrad_lab import __version__
from sparsegrad_lab.notebook import BINDER_REPO, COLAB_BRANCH

project = "sparsegrad_lab"
author = "sparsegrad_lab contributors"
copyright = "2026, sparsegrad_lab contributors. Lessons: CC BY 4.0; code: MIT"
release = __version__

# githubpages: writes .nojekyll, so GitHub Pages serves the _static/ folder as it is.
extensions = ["myst_nb", "sphinx.ext.githubpages"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# Rendered from the committed outputs: the site shows exactly what the tests checked.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
# Solution cells are tagged hide-cell by build_site.py: one collapsed dropdown per solution.
nb_code_prompt_show = "Show the solution"
nb_code_prompt_hide = "Hide the solution"

html_theme = "sphinx_book_theme"
html_title = "sparsegrad_lab lessons"
html_static_path = ["assets"]
html_show_sourcelink = False
html_copy_source = False
# Relative paths are served from _static/ (build_site.py puts the npm packages there).
mathjax_path = "mathjax/tex-mml-chtml.js"
# MathJax 3 plus a bridge for the widgets' MathJax 2 calls (see the file).
mathjax_config_path = "mathjax_config.js"
nb_ipywidgets_js = {
    "require.js": {},
    # Widget modules other than the built-in ones would be fetched from this "CDN": the
    # site's own folder, so nothing leaves it (the lessons use only built-in widgets).
    "html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "_static/html-manager/"},
}
html_theme_options = {
    "repository_url": f"https://github.com/{BINDER_REPO}",
    "repository_branch": COLAB_BRANCH,
    "path_to_docs": "",
    "use_repository_button": True,
    "launch_buttons": {
        "binderhub_url": "https://mybinder.org",
        "colab_url": "https://colab.research.google.com",
        "notebook_interface": "jupyterlab",
    },
    "announcement": (
        "A static copy of the lessons: widgets show their saved state and do not respond. "
        "Use the rocket button to run a lesson on Binder or Colab."
    ),
}
