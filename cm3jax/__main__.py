"""`python -m cm3jax ...` runs the `cm3jax` command."""

from cm3jax.cli import console_main

console_main()
