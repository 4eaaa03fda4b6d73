"""What WhatsApp takes and shows as files, pure: the Cloud API's limits and types for an upload,
and the names the agent sees for the media users send."""

from __future__ import annotations

from ..base import MB
from .events import Media

MAX_DOCUMENT_BYTES = 100 * MB  # the Cloud API's limits for a document and an image
MAX_IMAGE_BYTES = 5 * MB
IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})  # what WhatsApp shows as a photo
MAX_CAPTION = 1024
DOCUMENT_TYPES = frozenset(  # what the Cloud API takes as a document
    {
        "text/plain",
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)
TEXT_LIKE = frozenset({"application/json", "application/xml", "application/x-yaml"})
EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/amr": ".amr",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}


def upload_type(media_type: str) -> str:
    """The type a file is uploaded as: its own, except text WhatsApp has no type for (CSV,
    JSON, Markdown), which goes as ``text/plain`` (its name keeps its extension); any other
    type WhatsApp does not take is refused by Meta (error 131053), and said so."""
    textual = media_type.startswith("text/") or media_type in TEXT_LIKE
    return "text/plain" if textual and media_type not in DOCUMENT_TYPES else media_type


def file_name(media: Media) -> str:
    """``image-<id>.jpg``: a name the agent can tell apart, from what WhatsApp told us."""
    kind = "voice" if media.voice else media.kind
    return f"{kind}-{media.media_id[-12:]}{EXTENSIONS.get(media.mime_type, '')}"
