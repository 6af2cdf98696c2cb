"""Icon sources: each turns a library into a `SourceScan` of `IconRecord`s.

Figma lives in `icon_pipeline.library.sources.figma` and is imported only by whoever needs it (it pulls
in an HTTP client); the sources below are plain file-system readers.
"""

from icon_pipeline.library.sources.local import folder_fingerprint, scan_local
from icon_pipeline.library.sources.tabler import TablerFetchError, extract_package, fetch_tabler, scan_tabler

__all__ = [
    "TablerFetchError",
    "extract_package",
    "fetch_tabler",
    "folder_fingerprint",
    "scan_local",
    "scan_tabler",
]
