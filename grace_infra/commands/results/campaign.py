"""The campaign a stack plans, read offline from `Pulumi.<stack>.yaml` with the render's planning code.

`grace status`, `grace results check --stack` and `grace results pull` all ask the same question, "which
Jobs and which output files does this stack plan?", and answer it with `matrix.plan_experiments`, the
function the offline render and `pulumi up` use, so they cannot disagree about names or paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from grace_infra import constants as c
from grace_infra.config.input_files import offline_input_files
from grace_infra.config.stack_config import GraceConfig
from grace_infra.config.stack_files import PROJECT_ROOT, SECRET_KEYS, load_raw_config
from grace_infra.planning.matrix import PlannedJob, output_path, plan_experiments

__all__ = ["Campaign", "PlannedOutput", "load_campaign"]


@dataclass(frozen=True)
class PlannedOutput:
    """One output file a planned Job writes, relative to the output claim's root."""

    job: str
    model: str
    study: str
    experiment: str
    relative_path: PurePosixPath  # e.g. exp1/gemma-2-2b/study1_responses.csv


@dataclass(frozen=True)
class Campaign:
    config: GraceConfig
    jobs: tuple[PlannedJob, ...]

    @property
    def namespace(self) -> str:
        return self.config.namespace.name

    @property
    def outputs(self) -> tuple[PlannedOutput, ...]:
        root = PurePosixPath(c.OUTPUT_MOUNT)
        return tuple(
            PlannedOutput(
                job=job.name,
                model=cell.model.key,
                study=cell.study.value,
                experiment=cell.experiment.value,
                relative_path=output_path(cell.study, cell.experiment, cell.model.key).relative_to(root),
            )
            for job in self.jobs
            for cell in job.cells
        )


def load_campaign(stack: str) -> Campaign:
    """The stack's config and planned Jobs; GraceError with one sentence on a bad stack file."""
    raw, _ = load_raw_config(stack)
    # Only the planned Jobs and output paths matter here, not the study CSVs' contents.
    raw, _ = offline_input_files(raw, PROJECT_ROOT)
    config = GraceConfig.parse({key: value for key, value in raw.items() if key not in SECRET_KEYS})
    _, planned = plan_experiments(config)
    return Campaign(config=config, jobs=tuple(planned))
