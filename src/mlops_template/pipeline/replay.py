"""How a reproduction runs steps differently from an ordinary run: what they read, which model, what they leave.

Built by `mlops reproduce` from a past run's records and handed to the runner,
which passes it to each step's context:

- a step reads exactly the snapshots the past run's step read (by name, and
  `raw` for `read_raw`), whatever earlier steps of the reproduction wrote;
- `load_champion()` loads the model version the past run's step recorded;
- written snapshots do not become their datasets' current versions, and
  nothing is registered unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Replay:
    reproduces: str  # the pipeline run being reproduced
    code_root: Path  # where its code is checked out
    reads: dict[str, dict[str, str]] = field(default_factory=dict)  # step → dataset name → snapshot id
    model_versions: dict[str, str] = field(default_factory=dict)  # step → registered version it loaded
    register: bool = False

    def reads_of(self, step: str) -> dict[str, str]:
        return self.reads.get(step, {})
