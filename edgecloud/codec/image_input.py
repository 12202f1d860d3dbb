"""The "send the image instead" baseline: the preprocessed crop as a JPEG (``jpeg-input-qNN``)."""

from __future__ import annotations

import io

from PIL import Image

from edgecloud.codec.spec import parse_spec
from edgecloud.errors import BitstreamError, CodecSpecError


class ImageInputCodec:
    """JPEG-encodes the resized, centre-cropped RGB image that the model would see."""

    def __init__(self, quality: int) -> None:
        self.quality = quality

    @classmethod
    def from_spec(cls, spec: str) -> ImageInputCodec:
        parsed = parse_spec(spec)
        if parsed.kind != "image-input":
            raise CodecSpecError(f"{spec!r} is not an image-input codec (jpeg-input-qNN)")
        return cls(parsed.quality)

    @property
    def name(self) -> str:
        return f"jpeg-input-q{self.quality}"

    def encode(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=self.quality)
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
        except Exception as exc:  # Pillow raises many types on damaged images
            raise BitstreamError(f"JPEG input image cannot be decoded: {exc}") from exc
