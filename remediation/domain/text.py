"""Text from outside — commit subjects and authors, approvers' reasons, run messages — made inert where we
show it: in the chat channel and in markdown (artifacts, postmortems, the audit report).

A commit subject `<!channel> deploy <https://evil.example|docs>` must not page a whole channel or plant a
link in the incident's Slack thread, and `**ok** [x](javascript:…)` must not format an approval summary.
"""

from __future__ import annotations

import re

__all__ = ["for_slack", "md_inline"]

# Markdown's inline syntax plus HTML: each escaped with a backslash (CommonMark: any ASCII punctuation).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~&])")
_SPACE = re.compile(r"\s+")


def for_slack(text: str) -> str:
    """Slack's rule for text it must not treat as markup: `&`, `<` and `>` as entities, which Slack
    shows as the characters (no `<!channel>`, `<@user>` or `<url|label>` survives)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_inline(text: object, limit: int = 300) -> str:
    """One line of literal text inside markdown: whitespace runs (newlines too) collapsed, every
    markup character escaped, cut to `limit` characters of the original."""
    flat = _SPACE.sub(" ", str(text)).strip()
    cut = flat[:limit] + ("…" if len(flat) > limit else "")
    return _MD_SPECIAL.sub(r"\\\1", cut)
