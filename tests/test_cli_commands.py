"""`python -m ccpdml`: every sub-command in `COMMANDS` reaches its own argument parser."""

import pytest

from ccpdml import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_parses_its_own_help(name, capsys):
    """`--help` ends in argparse's exit 0 after printing the command's own usage line, so a
    command whose entry point does not import (a moved module) fails here."""
    with pytest.raises(SystemExit) as exit_info:
        cli.COMMANDS[name].run(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
