"""Generated documentation: the configuration table in ``docs/configuration.md``.

The table is rendered from the fields of ``imagepipe.settings.Settings`` (each setting's
variable, default and meaning are spelled there once) and written between two marker comments,
so the prose around it stays hand-written. ``python -m imagepipe_dev render-docs`` rewrites it;
a unit test fails when the committed file is out of step.
"""

from __future__ import annotations

from pathlib import Path

from imagepipe import settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = Path("docs") / "configuration.md"
START = "<!-- settings table: generated from imagepipe/settings.py -->"
END = "<!-- end of settings table -->"
HINT = ("<!-- Edit the settings, not this table; "
        "`make docs` (`python -m imagepipe_dev render-docs`) rewrites it. -->")


class DocsError(RuntimeError):
    pass


def settings_table() -> str:
    """The markdown table of every environment variable: name, default, meaning."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, meaning in settings.documentation():
        cells = (f"`{name}`", default, meaning)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def with_settings_table(text: str) -> str:
    """``text`` (a markdown page holding the two markers) with the table between them renewed."""
    try:
        before, rest = text.split(START + "\n", 1)
        _, after = rest.split(END, 1)
    except ValueError:
        raise DocsError(f"the page must hold the lines {START} and {END}") from None
    return f"{before}{START}\n{HINT}\n\n{settings_table()}\n\n{END}{after}"


def render(root: Path = ROOT) -> list[Path]:
    """Rewrite the generated parts of the docs under ``root``; the pages that changed."""
    path = Path(root) / CONFIGURATION
    text = path.read_text()
    renewed = with_settings_table(text)
    if renewed == text:
        return []
    path.write_text(renewed)
    return [path]
