"""``python -m salience``: the same as the ``salience`` command."""

from .cli import main

main()
