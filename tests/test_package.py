"""Package-level checks: the version is single-sourced and the CLI entry point is declared."""

import pathlib
import re

import ccpdml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_version_matches_setup():
    setup_text = (ROOT / "setup.py").read_text()
    declared = re.search(r'version="([^"]+)"', setup_text).group(1)
    assert ccpdml.__version__ == declared


def test_console_script_points_at_cli_main():
    setup_text = (ROOT / "setup.py").read_text()
    assert "ccpdml=ccpdml.cli:main" in setup_text
