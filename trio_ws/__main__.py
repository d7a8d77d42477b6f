"""``python -m trio_ws``: see :mod:`trio_ws._cli` (``python -m trio_ws --help``)."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
