"""`meetinghooks simulate`: a load simulator that plays the platform and the callback receiver."""

from __future__ import annotations

from meetinghooks.simulate.command import add_parser, command

__all__ = ["add_parser", "command"]
