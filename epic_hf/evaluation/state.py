"""The resumable state of an evaluation in its ``output_dir``: settings, progress, accumulators, result.

``evaluation_state.json`` is rewritten (atomically) after every batch. It records the
fingerprint of what the numbers depend on (model weights, U, data, settings); a run with
another fingerprint is refused rather than mixing two evaluations. ``consumed`` counts the
dataset records read so far (decoded or skipped), so a resumed run skips exactly those.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import CheckpointMismatchError

logger = logging.getLogger(__name__)

STATE_NAME = "evaluation_state.json"
REPORT_NAME = "evaluation.json"
TABLE_NAME = "evaluation.md"


@dataclass
class EvaluationState:
    """What a killed or capped run leaves behind, and what a new run picks up."""

    fingerprint: dict[str, Any]
    consumed: int = 0
    exhausted: bool = False
    skipped_keys: list[int] = field(default_factory=list)
    accumulators: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    report: dict[str, Any] | None = None

    @classmethod
    def open(cls, directory: str | Path | None, fingerprint: dict[str, Any]) -> EvaluationState:
        """The state in ``directory`` (refused if made with another fingerprint), or a fresh one."""
        fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        if directory is None:
            return cls(fingerprint)
        path = Path(directory) / STATE_NAME
        if not path.is_file():
            return cls(fingerprint)
        stored = json.loads(path.read_text())
        recorded = stored.get("fingerprint", {})
        if recorded != fingerprint:
            changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
            raise CheckpointMismatchError(
                f"{directory} holds an evaluation made with other settings (differing: {changed}); use another "
                "output_dir, or delete this one to start over")
        logger.info("resuming the evaluation in %s after %d samples", directory, stored["consumed"])
        return cls(**stored)

    def save(self, directory: str | Path | None) -> None:
        if directory is None:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(directory) / STATE_NAME, json.dumps(vars(self)))

    def covers(self, cap: int | None) -> bool:
        """Whether the stored result already answers a run capped at ``cap`` samples."""
        if self.report is None:
            return False
        return self.exhausted or (cap is not None and self.consumed >= cap)
