"""The listeners every real run attaches (``api.recover``, a watchdog tick's recovery), in order:
the secret scrubbed first, then the incident report, whose path the history line then records."""

from typing import List

from cascade_ops.engine.events import RunListener
from cascade_ops.reporting.history import HistoryRecorder
from cascade_ops.reporting.incident import IncidentWriter
from cascade_ops.reporting.redaction import SecretScrubber


def run_listeners(run_id: str, playbook: str) -> List[RunListener]:
    scrubber = SecretScrubber()
    return [scrubber, IncidentWriter(scrubber), HistoryRecorder(run_id, playbook)]
