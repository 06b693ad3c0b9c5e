"""Email templates (Jinja2): a text and an HTML file per kind, in the package's ``templates/email``.

HTML templates are autoescaped, so user-supplied values such as display names
can never inject markup; text templates are not (they are plain text). A
template's ``subject`` block, in its text file, gives the subject line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from notification_svc.domain.emails import EmailKind, RenderedEmail


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _one_line(value: str) -> str:
    """Subjects are a single header line whatever a template produced."""
    return " ".join(value.split())


@dataclass(frozen=True)
class ShortText:
    """A push's or in-app item's title and body."""

    title: str
    body: str


class EmailRenderer:
    def __init__(self, *, product_name: str) -> None:
        self.product_name = product_name
        self.env = Environment(
            loader=PackageLoader("notification_svc", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["utc"] = _utc

    def render(
        self, kind: EmailKind, *, display_name: str, context: Mapping[str, Any]
    ) -> RenderedEmail:
        values = {**context, "display_name": display_name, "product_name": self.product_name}
        text_template = self.env.get_template(f"email/{kind.value}.txt.j2")
        html_template = self.env.get_template(f"email/{kind.value}.html.j2")
        subject_block = text_template.blocks["subject"]
        subject = "".join(subject_block(text_template.new_context(values)))
        return RenderedEmail(
            subject=_one_line(subject),
            text=text_template.render(values),
            html=html_template.render(values),
        )

    def short(self, template: str, context: Mapping[str, Any]) -> ShortText:
        """``templates/short/<template>.j2``: its ``title`` and ``body`` blocks, one line each
        (not autoescaped: push and in-app text is plain; clients must not render it as HTML)."""
        values = {**context, "product_name": self.product_name}
        compiled = self.env.get_template(f"short/{template}.j2")
        ctx = compiled.new_context(values)
        title = _one_line("".join(compiled.blocks["title"](ctx)))
        body = _one_line("".join(compiled.blocks["body"](ctx)))
        return ShortText(title=title[:120], body=body[:400])
