"""The watchdog's Prometheus metrics, in the text exposition format node_exporter's textfile
collector reads (one file per host, rewritten atomically each tick)."""

from typing import Any, Dict, List, Optional, Tuple

# name -> (type, help)
METRICS: Dict[str, Tuple[str, str]] = {
    "cascade_backend_healthy": ("gauge", "1 when the backend passed its health probe at the last tick"),
    "cascade_recoveries_total": ("counter", "Recoveries the watchdog has run on this host"),
    "cascade_last_recovery_timestamp_seconds": ("gauge", "Unix time of the last recovery (0: none yet)"),
    "cascade_restart_budget_remaining": ("gauge", "Recoveries still allowed within the budget's window"),
    "cascade_tick_duration_seconds": ("gauge", "How long the last watchdog tick took"),
    "cascade_step_duration_seconds": ("gauge", "How long each step of the last recovery took"),
    "cascade_last_tick_timestamp_seconds": ("gauge", "Unix time of the last watchdog tick"),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(host: str, values: Dict[str, Any], steps: Optional[Dict[str, float]] = None) -> str:
    """The metrics of one host; ``values`` by metric name, ``steps`` step -> seconds."""
    lines: List[str] = []
    for name, (kind, text) in METRICS.items():
        lines += ["# HELP %s %s" % (name, text), "# TYPE %s %s" % (name, kind)]
        if name == "cascade_step_duration_seconds":
            lines += [
                '%s{host="%s",step="%s"} %s' % (name, _label(host), _label(step), _number(seconds))
                for step, seconds in sorted((steps or {}).items())
            ]
        else:
            lines.append('%s{host="%s"} %s' % (name, _label(host), _number(values[name])))
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))
