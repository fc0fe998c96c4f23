"""`python -m hephaestus.cli`: the same as the `hephaestus` command."""

from hephaestus.cli import main

main()
