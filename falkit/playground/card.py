"""The ``%fal serve`` card as a widget: the same text and HTML card, plus a "playground"
button that opens the playground under it. The text/plain and text/html parts of its
display are the plain card's, so notebooks without a widget front end (nbval, GitHub)
show and compare exactly what they did."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ..serving import card_html, card_text


class ServeCard(W.VBox):
    """The serve card with a toggle that opens (and closes) the server's playground."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.playground: Any = None
        self.button = W.ToggleButton(
            description="playground", icon="play", tooltip="open the playground of this server"
        )
        self.button.observe(self._toggle, names="value")
        self.card = W.HTML(card_html(server))
        super().__init__([W.HBox([self.card, self.button])])

    def _toggle(self, change: dict[str, Any]) -> None:
        from .widget import playground

        if change["new"]:
            self.playground = playground(self.server)
            self.children = [*self.children[:1], self.playground]  # type: ignore[has-type]
        else:
            self.close_playground()

    def close_playground(self) -> None:
        if self.playground is not None:
            self.playground.close()
            self.playground = None
        self.children = self.children[:1]

    def close(self) -> None:
        self.close_playground()
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        bundle["text/plain"] = card_text(self.server)
        bundle["text/html"] = card_html(self.server)
        return bundle


def serve_card(server: Any) -> ServeCard:
    """The card ``%fal serve`` displays for ``server``."""
    return ServeCard(server)
