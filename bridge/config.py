"""A bend config file (TOML): render settings, the bend plan, and the tables the bridge reads.

::

    [render]                 # render settings, and the session's defaults:
    prompts = ["…"]          #   fps, batch, and tempo / time_signature used when no MIDI file or
    seed = 3                 #   REAPER project gives a tempo map
    fps = "24"
    [features]               # window = 0.05 (seconds)
    [[bend]] …               # the plan (bendbridge.protocol.plan)
    [[param]] …              # how the music drives the parameters (bridge.mapping)
    [smoothing.FEATURE] …
    [[midi]] …               # live MIDI CC mappings (bridge.midi_live)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from bendbridge.protocol.errors import PlanError, hint
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RenderSettings
from bendbridge.protocol.values import finite_number

from .tempo import TempoMap, TimeSignature, TimeSignatureMap, as_fraction
from .timeline import parse_fps

__all__ = ["ConfigError", "SessionConfig", "SESSION_KEYS", "DEFAULT_FPS", "DEFAULT_BATCH"]

SESSION_KEYS = ("fps", "batch", "tempo", "time_signature")  # the [render] keys that are not render settings
TABLES = ("render", "features", "bend", "param", "smoothing", "midi")
DEFAULT_FPS = Fraction(24)
DEFAULT_BATCH = 8


class ConfigError(PlanError):
    """A config file that cannot be read, or a table of it that is wrong."""


@dataclass(frozen=True)
class SessionConfig:
    """A validated config: ``settings``, ``plan``, the session defaults from ``[render]``, the
    feature window, and the raw tables that the mapping and MIDI loaders validate against the plan."""

    path: Path
    settings: RenderSettings | None  # None without prompts: a config for MIDI learn, say, need not render
    plan: BendPlan
    fps: Fraction = DEFAULT_FPS
    batch: int = DEFAULT_BATCH
    tempo: TempoMap = field(default_factory=lambda: TempoMap.constant(120))
    meter: TimeSignatureMap = field(default_factory=TimeSignatureMap)
    feature_window: float = 0.05  # seconds
    tables: dict[str, Any] = field(default_factory=dict)

    def rendering(self) -> RenderSettings:
        """The render settings, which rendering needs: a config without prompts is refused here."""
        if self.settings is None:
            raise ConfigError("render.prompts", f'{self.path} has no prompts; add [render] prompts = ["…"]')
        return self.settings

    @classmethod
    def load(cls, path: str | Path) -> SessionConfig:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (FileNotFoundError, IsADirectoryError):
            raise ConfigError(str(p), "no such config file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(str(p), f"not valid TOML: {e}") from None
        return cls.from_dict(data, p)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path = Path("config")) -> SessionConfig:
        for key in data:
            if key not in TABLES:
                raise ConfigError(key, f"unknown table{hint(key, TABLES, 'valid tables')}")
        render = data.get("render", {})
        values = RenderSettings.table_values(render, "render", SESSION_KEYS)
        settings = RenderSettings(**values) if values.get("prompts") else None
        return cls(
            path,
            settings,
            BendPlan.from_dict({"bend": data.get("bend", [])}),
            **_session_defaults(render),
            feature_window=_feature_window(data.get("features", {})),
            tables=data,
        )


def _session_defaults(render: dict[str, Any]) -> dict[str, Any]:
    """fps, batch, tempo and meter from the ``[render]`` table, where given."""
    out: dict[str, Any] = {}
    if "fps" in render:
        out["fps"] = parse_fps(str(render["fps"]), "render.fps")
    if "batch" in render:
        out["batch"] = finite_number(render["batch"], "render.batch", 1, 1024, integer=True, error=ConfigError)
    if "tempo" in render:
        out["tempo"] = TempoMap.constant(
            as_fraction(finite_number(render["tempo"], "render.tempo", 1, 1000, error=ConfigError))
        )
    if "time_signature" in render:
        out["meter"] = TimeSignatureMap([_time_signature(render["time_signature"])])
    return out


def _time_signature(value: Any) -> TimeSignature:
    """'3/4' or [3, 4]."""
    parts = value.split("/") if isinstance(value, str) else value
    try:
        num, den = (int(v) for v in parts)
        return TimeSignature(1, num, den)
    except (TypeError, ValueError):
        raise ConfigError(
            "render.time_signature", f"expected 'NUM/DEN' (a power-of-two denominator), e.g. '3/4', got {value!r}"
        ) from None


def _feature_window(table: Any) -> float:
    if not isinstance(table, dict):
        raise ConfigError("features", "expected a table")
    for key in table:
        if key != "window":
            raise ConfigError(f"features.{key}", "unknown field; valid fields: window")
    return finite_number(table.get("window", 0.05), "features.window", 0.005, 2.0, error=ConfigError)
