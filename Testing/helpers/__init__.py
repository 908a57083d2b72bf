"""What several test modules share, in one place (test modules never import each other).

``helpers`` is importable because pytest puts ``Testing/`` on ``sys.path`` (the rootdir conftest):
:mod:`.env` (the checkout, ../shared, subprocess environment and command line), :mod:`.datasets`
(tiny synthetic labelled datasets), :mod:`.training` (cancel tokens, weight comparisons),
:mod:`.geometry` (test grids in every orientation) and :mod:`.benchmarks` (running a benchmark in
quick mode). Fixtures stay in ``conftest.py``.
"""
