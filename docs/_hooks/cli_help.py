"""MkDocs hook: ``<!-- fastvae-help: COMMAND -->`` in a page becomes that command's ``--help``, at build time.

``fastvae COMMAND --help`` is the reference of each command's options; the
CLI page shows it as the installed fastvae prints it, so the page cannot fall
behind the parser (``<!-- fastvae-help: fastvae -->``: the top-level help).
Wrapped at 100 columns whatever the terminal.
"""

import os
import re

MARKER = re.compile(r"^<!-- fastvae-help: (?P<command>[\w-]+) -->$", re.M)


def _help(command):
    from fastvae.cli import build_parser

    parser = build_parser()
    commands = parser.get_default("commands")
    if command != "fastvae" and command not in commands:
        raise ValueError(f"<!-- fastvae-help: {command} -->: no such command (known: {', '.join(commands)})")
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width
    try:
        return (parser if command == "fastvae" else commands[command]).format_help()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def on_page_markdown(markdown, page, config, files):
    def replace(match):
        return "```text\n" + _help(match.group("command")).rstrip() + "\n```"

    return MARKER.sub(replace, markdown)
