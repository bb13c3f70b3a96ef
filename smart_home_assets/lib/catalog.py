"""The device catalog: which ``device_type`` values are valid. A versioned JSON file that a deployment may replace."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

CATALOG_ENV_VAR = "SMART_HOME_DEVICE_CATALOG"
DEFAULT_CATALOG_PATH = Path(__file__).with_name("device_catalog.json")


@dataclass(frozen=True)
class DeviceCatalog:
    name: str
    version: str
    device_types: tuple[str, ...]
    path: str

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def load_device_catalog(path: str | os.PathLike | None = None) -> DeviceCatalog:
    """Load the catalog from ``path``, else ``$SMART_HOME_DEVICE_CATALOG``, else the one shipped with the project."""
    resolved = Path(path or os.environ.get(CATALOG_ENV_VAR) or DEFAULT_CATALOG_PATH)
    try:
        doc = json.loads(resolved.read_text(encoding="utf-8"))
        types = doc["device_types"]
        if not types or not all(isinstance(t, str) and t for t in types):
            raise ValueError("device_types must be a non-empty list of non-empty strings")
        return DeviceCatalog(
            name=str(doc.get("name", resolved.stem)),
            version=str(doc["version"]),
            device_types=tuple(sorted(set(types))),
            path=str(resolved.resolve()),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"device catalog {resolved}: cannot be used ({exc}); see README 'Device catalog'") from exc
