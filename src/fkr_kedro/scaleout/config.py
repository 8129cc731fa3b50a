"""``conf/<env>/slurm.yml``: the resources of each job kind (``shared``, ``variant``,
``report``) and the command that activates the project's environment in a job."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

JOB_KINDS = ("shared", "variant", "report")
# Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEMORY = re.compile(r"^\d+[KMGT]?$")


class SlurmConfigError(ValueError):
    """A malformed slurm.yml; the message names the file, the key and what is allowed."""


class JobResources(BaseModel):
    """What one job (or one array task) asks Slurm for; None leaves Slurm's default."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    time: str | None = Field(None, description="time limit: minutes, HH:MM:SS or D-HH:MM:SS")
    cpus: int | None = Field(None, ge=1, description="--cpus-per-task")
    mem: str | None = Field(None, description="--mem, e.g. 16G")
    gres: str | None = Field(None, description="--gres, e.g. gpu:1")
    account: str | None = None
    extra: list[str] = Field(default_factory=list, description="further #SBATCH lines, e.g. --qos=normal")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None and not _TIME.match(str(value)):
            raise ValueError(f"time {value!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
        return value

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(str(value)):
            raise ValueError(f"mem {value!r} is not a Slurm memory size (e.g. 4000, 16G)")
        return value

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: list[str]) -> list[str]:
        for line in value:
            if not str(line).startswith("--"):
                raise ValueError(f"extra line {line!r}: write an sbatch option as on the command line (--qos=normal)")
        return value

    def sbatch_lines(self) -> list[str]:
        options = {
            "partition": self.partition, "time": self.time, "cpus-per-task": self.cpus, "mem": self.mem,
            "gres": self.gres, "account": self.account,
        }
        lines = [f"#SBATCH --{key}={value}" for key, value in options.items() if value is not None]
        return lines + [f"#SBATCH {line}" for line in self.extra]


class SlurmConfig(BaseModel):
    """The whole slurm.yml: ``setup`` (shell lines run before ``kedro`` in every job, e.g.
    ``source .venv/bin/activate``), ``defaults`` for every job, and per kind overrides."""

    model_config = ConfigDict(extra="forbid")

    setup: list[str] = Field(default_factory=list)
    defaults: JobResources = JobResources()
    shared: JobResources = JobResources()
    variant: JobResources = JobResources()
    report: JobResources = JobResources()

    @field_validator("setup", mode="before")
    @classmethod
    def _setup(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def resources(self, kind: str) -> JobResources:
        """``defaults`` with the kind's own settings on top."""
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}: one of {JOB_KINDS}")
        own = getattr(self, kind)
        merged = {**self.defaults.model_dump(), **own.model_dump(exclude_unset=True)}
        if own.extra and self.defaults.extra:
            merged["extra"] = [*self.defaults.extra, *own.extra]
        return JobResources(**merged)


def load_slurm_config(data: Mapping[str, Any] | None, source: str) -> SlurmConfig:
    """The validated ``slurm`` section of ``source`` (the file(s) it came from, for errors)."""
    if data is None:
        return SlurmConfig()
    if not isinstance(data, Mapping) or set(data) != {"slurm"}:
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise SlurmConfigError(f"{source}: expected one top-level key `slurm:`, found {keys}")
    try:
        return SlurmConfig(**(data["slurm"] or {}))
    except ValidationError as error:
        problems = "; ".join(
            f"slurm.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise SlurmConfigError(
            f"{source}: {problems} (keys: setup, defaults, {', '.join(JOB_KINDS)}; "
            f"each job kind takes {', '.join(JobResources.model_fields)})"
        ) from None
