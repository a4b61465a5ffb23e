"""MkDocs hook: the options page's tables are written from `sweeps.spec.options`, the one
place each option is declared, every time the docs are built (so they cannot go stale)."""

from sweeps.spec.options import table_markdown

MARKER = "<!-- options table -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, table_markdown()) if MARKER in markdown else markdown
