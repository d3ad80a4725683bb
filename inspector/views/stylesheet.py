"""The views' one stylesheet: the shared rules (markup.py) and each panel's own.

A page includes it once (the app: webui/server.py, in the page's head). The panels carry none:
each carried it, and a cursor move sends every panel anew, so a 32-sequence run's update held
six copies of it, about 20 KB of the same text every time.
"""

from __future__ import annotations

from inspector.views.branch import BRANCH_CSS
from inspector.views.compare import COMPARE_CSS
from inspector.views.fork_choices import FORK_CSS
from inspector.views.markup import VIEWS_CSS

STYLESHEET = VIEWS_CSS + FORK_CSS + BRANCH_CSS + COMPARE_CSS
