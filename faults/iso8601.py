"""ISO-8601 durations as AWS FIS writes them (PT5M, PT30S, PT1M30S, P1D) to and from seconds."""
from __future__ import annotations

import re

_DURATION = re.compile(
    r"P(?!$)(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)
_UNITS = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
EXAMPLES = "PT30S, PT5M, PT1M30S, PT1H, P1D"


class DurationError(ValueError):
    """Not an ISO-8601 duration."""


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration: ``PT5M`` -> 300.0, ``PT1M30S`` -> 90.0, ``PT0.5S`` -> 0.5.
    Years and months are refused (their length in seconds is not fixed)."""
    if not isinstance(text, str):
        raise DurationError(f"expected an ISO-8601 duration string like {EXAMPLES}, got {text!r} "
                            f"({type(text).__name__})")
    m = _DURATION.fullmatch(text.strip())
    if not m or not any(m.groupdict().values()):
        hint = ""
        if re.fullmatch(r"\d+(\.\d+)?", text.strip()):
            hint = f" (write seconds as PT{text.strip()}S)"
        elif re.fullmatch(r"\d+(\.\d+)?[HMS]", text.strip()):
            hint = f" (the prefix is missing: PT{text.strip()})"
        elif text.upper() != text and _DURATION.fullmatch(text.strip().upper()):
            hint = " (the letters must be upper case)"
        elif re.fullmatch(r"P\d+M", text.strip()):
            hint = " (P..M means months, which FIS does not take; minutes are PT..M)"
        raise DurationError(f"{text!r} is not an ISO-8601 duration; expected e.g. {EXAMPLES}{hint}")
    return sum(float(v) * _UNITS[k] for k, v in m.groupdict().items() if v)


def format_duration(seconds: float) -> str:
    """The shortest ISO-8601 form: 90 -> ``PT1M30S``, 0.5 -> ``PT0.5S``, 0 -> ``PT0S``."""
    if seconds < 0:
        raise DurationError(f"a duration cannot be negative: {seconds!r}")
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    out = "PT"
    if hours:
        out += f"{int(hours)}H"
    if minutes:
        out += f"{int(minutes)}M"
    if secs or out == "PT":
        out += f"{secs:g}S" if secs != int(secs) else f"{int(secs)}S"
    return out
