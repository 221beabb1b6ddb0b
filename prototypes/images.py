"""Images people attach to ideas (mockups, screenshots): checked with Pillow before anything keeps them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from PIL import Image

MAX_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 25_000_000  # a 5000 × 5000 image; larger ones are refused before they are decoded
MAX_IMAGES = 4
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


@dataclass(frozen=True)
class CheckedImage:
    media_type: str
    width: int
    height: int
    size: int


def check_image(upload) -> CheckedImage:
    """Validate an uploaded image. Raises ValidationError with a message a person understands."""
    name = getattr(upload, "name", "the image")
    if upload.size > MAX_BYTES:
        raise ValidationError(f"{name} is larger than {MAX_BYTES // 2**20} MB. Attach a smaller image.")
    upload.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload) as image:
                kind = image.format
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ValidationError(f"{name} is {width}×{height} pixels; attach one under 25 megapixels.")
                image.verify()
    except ValidationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError(f"{name} is too large to open safely; attach a smaller image.") from None
    except Exception:  # noqa: BLE001 - Pillow raises many kinds of errors for broken or foreign files
        raise ValidationError(f"{name} is not an image we can read. Attach a PNG, JPEG, GIF or WebP file.") from None
    finally:
        upload.seek(0)
    if kind not in FORMATS:
        raise ValidationError(f"{name} is a {kind} image; attach a PNG, JPEG, GIF or WebP file.")
    return CheckedImage(FORMATS[kind], width, height, upload.size)
