"""`fstore CMD --help` says what the command does, as `fstore --help` lists it."""

from __future__ import annotations

import argparse

from featurestore.cli import build_parser


def test_each_commands_help_opens_with_what_it_does() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = {action.dest: action.help for action in commands._choices_actions}
    assert {"up", "produce", "predict", "skew", "training-set", "backup"} <= set(listed)
    for name, command in commands.choices.items():
        what = listed[name]
        assert what, name
        # It showed only the usage and the options (`fstore up --help`: nothing else).
        assert command.description == what, name
        assert what in " ".join(command.format_help().split()), name
