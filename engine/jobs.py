"""Background jobs: a registry of worker threads and their progress, free of any UI.

A job is a search, a fine-tune or an export (`Job.kind`); one runs at a time across all kinds,
since two would share the same few cores. Each job's work is a named body function
(`search_body`, `finetune_body`, `export_body`) that takes a progress callback and a cancel
event and reports plain dict events; `Job.apply` folds them into the job's state. A dashboard
keeps only a job id and reads `Job.snapshot()`, so switching pages, closing the tab or opening
a second one never stops or hides a job; the same bodies can run under another executor.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.config import ExportConfig, FinetuneRecipe, RunConfig, TrainConfig
from engine.errors import Cancelled, ConfigError, PrunescopeError
from engine.export import STEPS as EXPORT_STEPS
from engine.export import export_subnet
from engine.finetune import finetune, finetune_id
from engine.search import search, start_run
from engine.store import Store
from engine.train import train_or_reuse_parent
from engine.workspace import exports_dir, rebuild_parent, run_config

Progress = Callable[[dict], None]

# Job.phase values of a job still working
ACTIVE = ("training", "preparing", "searching", "finetuning", "exporting")
KINDS = {"search": "A search", "finetune": "A fine-tune", "export": "An export"}
CANCELLED_MESSAGES = {
    "search": "Cancelled while training the parent.",  # later, search() itself stops cleanly
    "finetune": "Cancelled after {done} of {total} epochs.",
    "export": "Cancelled; the half-written files were removed.",
}


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
    tuning: tuple[int, int] | None = (
        None  # search: finalists given the short fine-tune, of how many
    )
    train: dict | None = None  # training progress: epoch, epochs, batch, batches (loss, accuracy)
    epoch: dict | None = None  # fine-tune: the last finished epoch (epoch, val_accuracy, ...)
    step: str | None = None  # export: the step under way (engine.export.STEPS)
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

    def apply(self, event: dict) -> bool:
        """Fold one progress event of this job's body into its state; True when stored rows
        changed (cached lists should refresh)."""
        stage = event.get("stage")
        if stage == "training":  # a search trains its parent first
            self.phase = "training"
            self.train = {"epoch": 0, "epochs": event["epochs"], "batch": 0, "batches": 0}
        elif stage == "preparing":
            self.phase = "preparing"
        elif stage == "searching":
            self.run_id = event["run_id"]
            self.done = self.done_at_start = event["done"]
            self.phase, self.searching_since = "searching", time.time()
            return True  # the new run shows in run lists before its first row
        elif stage == "train" and self.kind == "search":
            self.train = {k: event[k] for k in ("epoch", "epochs", "batch", "batches")}
        elif stage == "train":
            keys = ("epoch", "epochs", "batch", "batches", "loss", "accuracy")
            self.train = {k: event.get(k) for k in keys}
            if self.phase != "finetuning":  # the row is stored as running by now
                self.phase = "finetuning"
                return True
        elif stage == "epoch" and self.kind == "finetune":
            self.done, self.epoch = int(event["epoch"]), dict(event)
            return True  # the stored row moved on
        elif stage == "export":
            self.phase = "exporting"
            self.step, self.done, self.total = event["step"], event["done"], event["total"]
        elif stage == "tuning":  # the search's short fine-tune of its best subnets
            self.tuning = (event["done"], event["total"])
            return True
        elif "subnet_id" in event:  # a search stored one more subnet
            self.done, self.total = event["done"], event["total"]
            if event.get("error"):
                self.last_error = f"subnet {event.get('subnet_id')}: {event['error']}"
            elif event.get("accuracy") is not None:
                self.best_accuracy = max(self.best_accuracy or 0.0, event["accuracy"])
            return True
        return False


# --- job bodies: plain functions, a progress callback and a cancel event ---------------------


def search_body(
    store: Store,
    progress: Progress,
    cancel: threading.Event,
    *,
    config: RunConfig | None = None,
    train: TrainConfig | None = None,
    resume: str | None = None,
) -> dict:
    """A new run from `config` (training its parent first when `train` is given), or the
    stored run `resume` continued; returns {"run_id", "status", "message"}."""
    if resume:
        run_id, parent = resume, rebuild_parent(store.run(resume))
    else:
        if train is not None:
            progress({"stage": "training", "epochs": train.epochs})
            spec = train_or_reuse_parent(
                config.model, config.data, train, progress=progress, cancel=cancel
            )
            config = replace(config, model=spec)
        progress({"stage": "preparing"})
        run_id, parent = start_run(store, config)
    progress({"stage": "searching", "run_id": run_id, "done": store.count_subnets(run_id)})
    status = search(store, run_id, parent, progress=progress, cancel=cancel)
    return {"run_id": run_id, "status": status, "message": store.run(run_id).get("message")}


def finetune_body(
    store: Store,
    progress: Progress,
    cancel: threading.Event,
    *,
    run_id: str,
    subnet_id: int,
    recipe: FinetuneRecipe,
) -> dict:
    """Fine-tune one subnet (resuming a stopped one); returns its `finetunes` row."""
    return finetune(store, run_id, subnet_id, recipe, progress=progress, cancel=cancel)


def export_body(
    store: Store,
    progress: Progress,
    cancel: threading.Event,
    *,
    run_id: str,
    subnet_id: int,
    folder: Path,
    finetune_id: str | None = None,
    config: ExportConfig | None = None,
) -> dict:
    """Export into `folder`; cancelling stops between steps and removes the half-written
    folder (unless an exports row already points at it). Returns the report."""

    def step(event: dict) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled by the user")
        progress(event)

    try:
        return export_subnet(
            store,
            run_id,
            subnet_id,
            out_dir=folder,
            finetune_id=finetune_id,
            config=config,
            progress=step,
        )
    except BaseException:
        if not _export_recorded(store, run_id, folder):  # nothing points at the files
            shutil.rmtree(folder, ignore_errors=True)
        raise


class JobRegistry:
    """Every job this process started, by id. A dashboard keeps one per process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self.version = 0  # bumped after every write a job makes; keys cached run lists

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

    def start_search(self, store: Store, config: RunConfig, train: TrainConfig | None = None):
        """A new run: train the parent first when `train` is given."""
        s = config.search
        label = f"{config.model.name} on {config.data.name}, {s.constraint}, {s.sampler} sampler"
        job = self._add(label, s.num_subnets, "search")
        return self._launch(job, store, search_body, config=config, train=train)

    def resume(self, store: Store, run_id: str) -> Job:
        """Continue a stored run (interrupted, cancelled or failed) up to its number of subnets."""
        run = store.run(run_id)
        label = f"resume {run_id}: {run['model']} on {run['dataset']}"
        job = self._add(label, run_config(run).search.num_subnets, "search")
        job.run_id, job.done = run_id, int(run.get("evaluated") or 0)
        return self._launch(job, store, search_body, resume=run_id)

    def start_finetune(
        self, store: Store, run_id: str, subnet_id: int, recipe: FinetuneRecipe
    ) -> Job:
        """Fine-tune one subnet; the same recipe again resumes it (or returns it when finished)."""
        fid = finetune_id(run_id, subnet_id, recipe)
        stored = store.finetune(fid)
        label = f"fine-tune subnet {int(subnet_id)} of run {run_id}: {recipe.describe()}"
        job = self._add(label, recipe.train.epochs, "finetune")
        job.run_id, job.subnet_id, job.finetune_id = run_id, int(subnet_id), fid
        job.done = int((stored or {}).get("epochs_done") or 0)
        return self._launch(
            job, store, finetune_body, run_id=run_id, subnet_id=int(subnet_id), recipe=recipe
        )

    def start_export(
        self,
        store: Store,
        run_id: str,
        subnet_id: int,
        *,
        finetune_id: str | None = None,
        config: ExportConfig | None = None,
    ) -> Job:
        """Export a subnet (as recalibrated, or fine-tuned by `finetune_id`); see export_body."""
        config = config or ExportConfig()
        source = f"fine-tune {finetune_id}" if finetune_id else "recalibrated"
        int8 = ", INT8" if config.int8 else ""
        label = f"export subnet {int(subnet_id)} of run {run_id} ({source}{int8})"
        job = self._add(label, len(EXPORT_STEPS), "export")
        job.run_id, job.subnet_id, job.finetune_id = run_id, int(subnet_id), finetune_id
        folder = exports_dir() / f"{run_id}-subnet{int(subnet_id)}-{job.job_id}"
        return self._launch(
            job,
            store,
            export_body,
            run_id=run_id,
            subnet_id=int(subnet_id),
            folder=folder,
            finetune_id=finetune_id,
            config=config,
        )

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

    def _launch(self, job: Job, store: Store, body, **kwargs) -> Job:
        """Run `body(store, progress, cancel, **kwargs)` in a daemon thread."""
        thread = threading.Thread(
            target=self._work,
            args=(job, store, body, kwargs),
            name=f"{job.kind}-{job.job_id}",
            daemon=True,
        )
        thread.start()
        return job

    def _work(self, job: Job, store: Store, body, kwargs: dict) -> None:
        def progress(event: dict) -> None:
            if job.apply(event):
                self.bump()

        try:
            result = body(store, progress, job.cancel, **kwargs)
            if job.kind == "search":
                job.status, job.message = result["status"], result["message"]
            else:
                job.result, job.status = result, "done"
                job.done = int(result["epochs_done"]) if job.kind == "finetune" else job.total
        except Cancelled:  # a search raises it only while training its parent
            job.status = "cancelled"
            job.message = CANCELLED_MESSAGES[job.kind].format(done=job.done, total=job.total)
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
