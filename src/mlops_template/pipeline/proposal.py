"""A step's model proposal: log a trained model, put it to the gate, register it once the step has succeeded.

And the other way round, loading the champion a step predicts with. Both go
through the environment's `[model]`: its gate, and what it trusts to load
(`models.trust`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.config.load import ModelConfig
from mlops_template.models import model_files, registry
from mlops_template.models.gate import Decision
from mlops_template.models.trust import Trust
from mlops_template.pipeline.cache import Reads, model_settings
from mlops_template.pipeline.state import StepState
from mlops_template.progress import activity
from mlops_template.redact import redact_text
from mlops_template.tracking.tags import (
    TAG_DATA_PREFIX,
    TAG_GATE,
    TAG_GATE_REASON,
    TAG_HELDOUT_DATA,
    TAG_MODEL_SHA256,
    TAG_MODEL_VERSION,
    TAG_TRAINING_DATA,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities.model_registry import ModelVersion

    from mlops_template.models import flavors


@dataclass(frozen=True)
class Candidate:
    """A logged model waiting for the gate: what it is scored with, on which rows, and its score."""

    model_uri: str
    model: Any
    heldout: pd.DataFrame
    target: str
    value: float


class Proposals(StepState):
    """The model half of a step's context: `StepContext` holds the state, and `_store` and `log_metrics`."""

    _datasets: dict[str, str]
    _training: dict[str, str]
    _proposal: tuple[Candidate, Decision] | None
    _reads: Reads

    @property
    def model_config(self) -> ModelConfig:
        """`[model]` as this environment has it (its `[environments.<name>.model]` over the project's)."""
        return self.config.model_in(self.environment.name)

    @property
    def trust(self) -> Trust:
        """What this environment lets be logged and loaded."""
        return Trust.of(self.model_config, self.environment.name)

    @property
    def task(self) -> str:
        """`[model] task`: "classification" or "regression"."""
        return self.model_config.task

    def propose_model(
        self,
        model: Any,
        *,
        train: pd.DataFrame,
        heldout: pd.DataFrame,
        target: str,
        log_model: flavors.LogModel | None = None,
        pip_requirements: list[str] | None = None,
    ) -> Decision:
        """Log a trained model, score it on the held-out rows and put it to the `[model] gate`.

        `train` and `heldout` are stored as snapshots (`train`, `heldout`); the
        task's metrics and the gate metric are computed here on `heldout`, and
        the champion is scored on the same rows, less any it trained on. The
        model is logged with its library's flavour (scikit-learn, XGBoost,
        LightGBM, a pyfunc where `allow_pickle` lets it), or by `log_model(name)`
        for anything else.

        Passed: once the step has returned without error, a registry version is
        created (tagged with its data snapshots and its files' sha256), `champion`
        moves to it (if someone moved it meanwhile, the gate decides again against
        the new one) and the model is exported to `models/<name>/v<version>/`.
        Failed, or the step fails later: nothing is registered. The decision is
        tagged either way.
        """
        import mlflow

        from mlops_template.models import flavors
        from mlops_template.models.scoring import predict, reported_metrics, score
        from mlops_template.models.targets import check_target

        check_target(heldout, target, self.task, table="the held-out rows")
        self._store("train", train, "training")
        self._store("heldout", heldout, "heldout")
        X, y = heldout.drop(columns=[target]), heldout[target]
        with activity("logging the model to MLflow"):
            info = flavors.log_model(
                model,
                name="model",
                input_example=train.drop(columns=[target]).head(5),
                log_model=log_model,
                pip_requirements=pip_requirements,
                trust=self.trust,
            )
            if log_model is not None or flavors.flavor(model) == flavors.PYFUNC:
                with tempfile.TemporaryDirectory(prefix="mlops-logged-") as tmp:  # score what was logged
                    logged = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)
                    model = flavors.load(logged, self.trust, what="the model logged")
        metric = self.model_config.gate.metric
        with activity(f"scoring the model on {len(heldout):,} held-out rows"):
            metrics = reported_metrics(self.task, y, predict(model, X))
            value = metrics[metric] if metric in metrics else score(model, X, y, metric, task=self.task)
        self.log_metrics({**metrics, metric: value})
        candidate = Candidate(info.model_uri, model, heldout, target, value)
        with activity("putting the model to the gate"):
            champion = registry.champion(mlflow.MlflowClient(), self.model_config.name)
            decision = self._decide(candidate, champion)
        self._reads.model = str(champion.version) if champion is not None else "none"  # judged against (cache.py)
        self._reads.judged = True
        self._reads.settings = model_settings(self.model_config, judged=True)
        self._tag_decision(decision)
        if decision.passed:
            self._proposal = (candidate, decision)
        else:
            self.notes.append(f"gate failed: {decision.reason}; nothing registered")
        return decision

    def _decide(self, candidate: Candidate, current: ModelVersion | None) -> Decision:
        """The gate's decision about `candidate` against `current` (the champion, or None), on its held-out rows."""
        import mlflow

        from mlops_template.models.gate import decide

        name, trust = self.model_config.name, self.trust
        return decide(
            self.model_config.gate,
            candidate.value,
            candidate.heldout,
            candidate.target,
            current=current,
            load=lambda version: registry.load_version(mlflow.MlflowClient(), name, version, trust),
            candidate=candidate.model,
            candidate_features=None,
            read=lambda ref: self.snapshots.read(ref)[1],
            task=self.task,
        )

    def _tag_decision(self, decision: Decision) -> None:
        import mlflow

        reason = redact_text(decision.reason)  # it may quote a champion's error
        mlflow.set_tags({TAG_GATE: "passed" if decision.passed else "failed", TAG_GATE_REASON: reason})

    def _finish(self) -> None:
        """Register the model that passed the gate: called by the runner once the step succeeded."""
        if self._proposal is None:
            return
        if self.replay is not None and not self.replay.register:
            self.notes.append("reproduction: nothing registered (--register registers it)")
            return
        import mlflow

        candidate, decision = self._proposal
        name = self.model_config.name
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(candidate.model_uri, dst_path=tmp))
            sha256 = model_files.sha256(local)
            tags = {
                TAG_MODEL_SHA256: sha256,
                **{TAG_DATA_PREFIX + k: v for k, v in self._datasets.items()},
                TAG_TRAINING_DATA: refs(self._training),
                TAG_HELDOUT_DATA: f"heldout:{self._datasets['heldout']}",
            }
            done = registry.register(
                mlflow.MlflowClient(),
                name,
                decision,
                regate=lambda current: self._decide(candidate, current),
                record=self._tag_decision,
                beat_champion=self.model_config.gate.beat_champion,
                model_uri=candidate.model_uri,
                run_id=self.run_id,
                tags=tags,
                export=(self.storage, local),
            )
            if done.version is not None:  # predict in this process takes it as it is, not loaded back
                registry.remember(local, sha256, candidate.model)
        if done.version is None:
            self.notes.append(f"gate failed: {done.decision.reason}; nothing registered")
        else:
            self.notes.append(f"gate passed: {done.decision.reason}; {name} v{done.version} is champion")

    def _abandon(self, error: BaseException) -> None:
        """The step failed after its model passed the gate: record that nothing was registered."""
        if self._proposal is None:
            return
        import mlflow

        mlflow.set_tags(
            {
                TAG_GATE: "failed",
                TAG_GATE_REASON: redact_text(f"the step failed after the gate passed ({error}); nothing registered"),
            }
        )

    def load_champion(self) -> registry.Champion:
        """The registry's champion, verified against its recorded sha256 and loaded as this environment trusts."""
        import mlflow

        client, name = mlflow.MlflowClient(), self.model_config.name
        version = self.replay.model_versions.get(self.step) if self.replay is not None else None
        if version is not None:  # a reproduction loads the version the reproduced step used
            champion = registry.load_version(client, name, registry.version(client, name, version), self.trust)
        else:
            champion = registry.load_champion(client, name, self.trust)
        mlflow.set_tag(TAG_MODEL_VERSION, champion.version)
        self._reads.model = str(champion.version)
        if not self._reads.judged:
            self._reads.settings = model_settings(self.model_config, judged=False)
        self.notes.append(f"model {champion.name} v{champion.version}")
        return champion


def refs(snapshots: dict[str, str]) -> str:
    """`name:id,...` of snapshots, in name order: how a registered version's training data is tagged."""
    return ",".join(f"{name}:{sid}" for name, sid in sorted(snapshots.items()))
