"""``python -m localnorm``: the ``localnorm`` command, for where console scripts are not on
PATH.

The command line lives in the application room (:mod:`localnorm.experiments._cli`), above
the core; the core never imports it. This launcher only runs as ``__main__`` (importing it
does nothing), and names the application's module by string, so ``import localnorm`` and
every core module stay free of the rooms above them.
"""

from __future__ import annotations

import importlib

if __name__ == "__main__":
    raise SystemExit(importlib.import_module("localnorm.experiments._cli").main())
