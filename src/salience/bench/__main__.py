"""``python -m salience.bench evaluate|bench ...`` (what ``torchrun -m`` launches)."""

from .cli import app

app()
