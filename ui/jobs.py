"""Background jobs: a process-wide registry of worker threads and their progress.

A job is a search, a fine-tune or an export (`Job.kind`); one runs at a time across all kinds,
since two would share the same few cores. Workers never call Streamlit. A page keeps only a job
id (or a run id) in `st.session_state` and reads a `Job.snapshot()` from the registry, so
switching pages, closing the tab or opening a second one never stops or hides a job.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import streamlit as st

from engine.config import DataSpec, ModelSpec, SearchConfig, home_dir
from engine.errors import ConfigError, PrunescopeError
from engine.export import export_subnet
from engine.finetune import FinetuneRecipe, finetune
from engine.finetune import finetune_id as finetune_key
from engine.models import read_checkpoint_metadata
from engine.search import configs_of, resume_parent, search, start_run
from engine.store import Store
from engine.train import Cancelled
from ui.format import recipe_text

# Job.phase values of a job still working
ACTIVE = ("training", "preparing", "searching", "finetuning", "exporting")
KINDS = {"search": "A search", "finetune": "A fine-tune", "export": "An export"}


@dataclass
class Job:
    job_id: str
    label: str  # what the job does, in one line ("resnet20 on synthetic, flops=50%")
    total: int  # search: subnets the run ends with; fine-tune: epochs; export: steps
    kind: str = "search"  # search | finetune | export
    run_id: str | None = None  # known once the run is recorded (at once when resuming)
    subnet_id: int | None = None  # fine-tune and export: the subnet worked on
    finetune_id: str | None = None  # fine-tune: its id; export: the fine-tune exported, if any
    phase: str = "preparing"  # training | preparing | searching | finetuning | exporting | finished
    status: str | None = None  # when finished: done | cancelled | failed | interrupted
    message: str | None = None  # the run's final message (e.g. the sampler ran out)
    error: tuple[str, str] | None = None  # (title, message) when the job itself failed
    last_error: str | None = None  # the last subnet that failed to evaluate, if any
    done: int = 0  # subnets stored in the run; epochs finished; export steps done
    done_at_start: int = 0  # subnets the run already had when this job began searching
    best_accuracy: float | None = None
    train: dict | None = None  # training progress: epoch, epochs, batch, batches (loss, accuracy)
    epoch: dict | None = None  # fine-tune: the last finished epoch (epoch, val_accuracy, ...)
    step: str | None = None  # export: the step under way (engine.export's step names)
    result: dict | None = None  # when done: the fine-tune's row, or the export's report
    started_at: float = field(default_factory=time.time)
    searching_since: float | None = None  # when the first subnet evaluation began
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def eta_seconds(self) -> float | None:
        """Seconds left at the rate of this job's evaluations so far; None before the first."""
        measured = self.done - self.done_at_start
        if self.phase != "searching" or not measured or self.searching_since is None:
            return None
        rate = measured / max(time.time() - self.searching_since, 1e-6)
        return max(self.total - self.done, 0) / rate

    def snapshot(self) -> dict:
        """A consistent copy for a page to render."""
        data = {k: v for k, v in self.__dict__.items() if k != "cancel"}
        data.update(active=self.active, eta=self.eta_seconds(), cancelling=self.cancel.is_set())
        return data


class JobRegistry:
    """Every job this server process started, by id. One per process (`registry()`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self.version = 0  # bumped after every write the app makes; keys cached run lists

    def bump(self) -> None:
        with self._lock:
            self.version += 1

    def get(self, job_id: str | None) -> Job | None:
        return self._jobs.get(job_id) if job_id else None

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)

    def active(self, kind: str | None = None) -> list[Job]:
        return [j for j in self.jobs() if j.active and kind in (None, j.kind)]

    def for_run(self, run_id: str) -> Job | None:
        """The newest job working on (or last having worked on) this run."""
        return next((j for j in self.jobs() if j.run_id == run_id), None)

    def start_search(
        self,
        store: Store,
        model_spec: ModelSpec,
        data_spec: DataSpec,
        cfg: SearchConfig,
        train_cfg=None,
    ) -> Job:
        """A new run: train the parent first when `train_cfg` (engine.train.TrainConfig) is given."""
        label = f"{model_spec.name} on {data_spec.name}, {cfg.constraint}, {cfg.sampler} sampler"
        job = self._add(label, cfg.num_subnets, "search")

        def prepare():
            spec = model_spec
            if train_cfg is not None:
                job.phase = "training"
                spec = _train(job, model_spec, data_spec, train_cfg)
                job.phase = "preparing"
            run_id, parent = start_run(store, spec, data_spec, cfg)
            return run_id, parent, cfg

        self._launch(job, store, self._search(job, store, prepare))
        return job

    def resume(self, store: Store, run_id: str) -> Job:
        """Continue a stored run (interrupted, cancelled or failed) up to its number of subnets."""
        run = store.run(run_id)
        cfg = configs_of(run)[2]
        label = f"resume {run_id}: {run['model']} on {run['dataset']}"
        job = self._add(label, cfg.num_subnets, "search")
        job.run_id = run_id
        job.done = int(run.get("evaluated") or 0)
        self._launch(
            job, store, self._search(job, store, lambda: (run_id, resume_parent(run), cfg))
        )
        return job

    def start_finetune(
        self, store: Store, run_id: str, subnet_id: int, recipe: FinetuneRecipe
    ) -> Job:
        """Fine-tune one subnet; the same recipe again resumes it (or returns it when finished)."""
        fid = finetune_key(run_id, subnet_id, recipe)
        stored = store.finetune(fid)
        label = f"fine-tune subnet {int(subnet_id)} of run {run_id}: {recipe_text(recipe)}"
        job = self._add(label, recipe.epochs, "finetune")
        job.run_id, job.subnet_id, job.finetune_id = run_id, int(subnet_id), fid
        job.done = int((stored or {}).get("epochs_done") or 0)

        def work() -> None:
            def progress(event: dict) -> None:
                if event.get("stage") == "train":
                    if job.phase != "finetuning":  # the row is stored as running by now
                        job.phase = "finetuning"
                        self.bump()
                    keys = ("epoch", "epochs", "batch", "batches", "loss", "accuracy")
                    job.train = {k: event.get(k) for k in keys}
                elif event.get("stage") == "epoch":
                    job.done, job.epoch = int(event["epoch"]), dict(event)
                    self.bump()  # the stored row moved on: lists keyed on `version` refresh

            job.result = finetune(
                store, run_id, subnet_id, recipe, progress=progress, cancel=job.cancel
            )
            job.done, job.status = int(job.result["epochs_done"]), "done"

        self._launch(job, store, work)
        return job

    def start_export(
        self,
        store: Store,
        run_id: str,
        subnet_id: int,
        *,
        finetune_id: str | None = None,
        int8: bool = False,
    ) -> Job:
        """Export a subnet (as recalibrated, or fine-tuned by `finetune_id`); see export_subnet.

        Cancelling stops between steps and removes the half-written folder.
        """
        source = f"fine-tune {finetune_id}" if finetune_id else "recalibrated"
        label = (
            f"export subnet {int(subnet_id)} of run {run_id} ({source}{', INT8' if int8 else ''})"
        )
        job = self._add(label, 7, "export")
        job.run_id, job.subnet_id, job.finetune_id = run_id, int(subnet_id), finetune_id
        folder = home_dir() / "exports" / f"{run_id}-subnet{int(subnet_id)}-{job.job_id}"

        def work() -> None:
            job.phase = "exporting"

            def progress(event: dict) -> None:
                if job.cancel.is_set():
                    raise Cancelled("cancelled by the user")
                job.step, job.done, job.total = event["step"], event["done"], event["total"]

            try:
                job.result = export_subnet(
                    store,
                    run_id,
                    subnet_id,
                    out_dir=folder,
                    finetune_id=finetune_id,
                    int8=int8,
                    progress=progress,
                )
            except BaseException:
                if not _export_recorded(store, run_id, folder):  # nothing points at the files
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            job.done, job.status = job.total, "done"

        self._launch(job, store, work)
        return job

    def _add(self, label: str, total: int, kind: str) -> Job:
        """Register a job; refused while another one works (two jobs would share 2 cores)."""
        job = Job(job_id=uuid.uuid4().hex[:8], label=label, total=total, kind=kind)
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.active), None)
            if busy is not None:
                raise ConfigError(
                    f"{KINDS[busy.kind]} is already running ({busy.label}). "
                    "Cancel it or wait for it to end.",
                    title="A job is already running",
                )
            self._jobs[job.job_id] = job
        return job

    def _launch(self, job: Job, store: Store, work) -> None:
        """Run `work()` in a daemon thread; it fills job.status (and job.result)."""
        thread = threading.Thread(
            target=self._work, args=(job, store, work), name=f"{job.kind}-{job.job_id}", daemon=True
        )
        thread.start()

    def _work(self, job: Job, store: Store, work) -> None:
        try:
            work()
        except Cancelled:  # a search raises it only while training its parent
            job.status = "cancelled"
            job.message = {
                "search": "Cancelled while training the parent.",
                "finetune": f"Cancelled after {job.done} of {job.total} epochs.",
                "export": "Cancelled; the half-written files were removed.",
            }[job.kind]
        except PrunescopeError as exc:
            job.status, job.error = "failed", (exc.title, exc.message)
        except Exception as exc:  # a bug, not bad input: keep the message, never crash the server
            job.status = "failed"
            job.error = ("Unexpected error", f"{exc.__class__.__name__}: {exc}")
        finally:
            if job.kind == "search" and job.error and job.run_id:
                _mark_failed(store, job.run_id, job.error[1])
            job.phase, job.finished_at = "finished", time.time()
            self.bump()

    def _search(self, job: Job, store: Store, prepare):
        """A search's work: `prepare()` gives (run_id, parent, cfg), then the loop runs."""

        def work() -> None:
            run_id, parent, cfg = prepare()
            job.run_id = run_id
            job.done = job.done_at_start = store.count_subnets(run_id)
            self.bump()  # the new run shows in cached run lists before its first row
            job.phase, job.searching_since = "searching", time.time()

            def progress(event: dict) -> None:
                job.done, job.total = event["done"], event["total"]
                if event.get("error"):
                    job.last_error = f"subnet {event.get('subnet_id')}: {event['error']}"
                elif event.get("accuracy") is not None:
                    job.best_accuracy = max(job.best_accuracy or 0.0, event["accuracy"])
                self.bump()

            job.status = search(store, run_id, parent, cfg, progress=progress, cancel=job.cancel)
            job.message = store.run(run_id).get("message")

        return work


def _export_recorded(store: Store, run_id: str, folder: Path) -> bool:
    """Whether an exports row points at `folder` (a failed parity check still records one)."""
    try:
        return str(folder.resolve()) in set(store.exports(run_id)["out_dir"])
    except PrunescopeError:
        return False


def _mark_failed(store: Store, run_id: str, message: str) -> None:
    """The engine marks a run failed when its loop raises; this covers errors around the loop."""
    try:
        if store.run(run_id)["status"] == "running":
            store.set_status(run_id, "failed", message)
    except PrunescopeError:
        pass


def parent_checkpoint(model_spec: ModelSpec, data_spec: DataSpec, train_cfg) -> Path:
    """Where a parent trained here is kept: one file per (model, data, recipe)."""
    key = json.dumps([model_spec.name, data_spec.to_dict(), train_cfg.to_dict()], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return home_dir() / "parents" / f"{model_spec.name}-{data_spec.name}-{digest}.safetensors"


def _train(job: Job, model_spec: ModelSpec, data_spec: DataSpec, train_cfg) -> ModelSpec:
    """Train the parent (or reuse a finished checkpoint of the same recipe); returns its spec."""
    from engine.train import train_parent

    path = parent_checkpoint(model_spec, data_spec, train_cfg)
    finished = path.exists() and (
        read_checkpoint_metadata(path).get("epochs_done") == train_cfg.epochs
    )
    if not finished:
        job.train = {"epoch": 0, "epochs": train_cfg.epochs, "batch": 0, "batches": 0}

        def progress(event: dict) -> None:
            if event.get("stage") == "train":
                job.train = {k: event[k] for k in ("epoch", "epochs", "batch", "batches")}

        train_parent(
            replace(model_spec, weights="random"),
            data_spec,
            train_cfg,
            path,
            progress=progress,
            cancel=job.cancel,
        )
    trained = read_checkpoint_metadata(path)["model"]  # class count and size follow the data
    return ModelSpec(**{**trained, "weights": "file", "weights_path": str(path)})


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    """The process-wide registry, shared by every session and tab."""
    return JobRegistry()
