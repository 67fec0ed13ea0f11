"""QR codes as inline SVG (qrcode's SVG factory needs no imaging library)."""

from __future__ import annotations

import qrcode
import qrcode.image.svg


def qr_svg(data: str, *, title: str) -> str:
    """An accessible inline <svg> encoding `data`; the caller marks it safe (we built it)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    svg = str(image.to_string(encoding="unicode"))
    # Name the image for screen readers and let CSS size it (the factory writes millimetres).
    label = title.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" class="qr" ', 1)
