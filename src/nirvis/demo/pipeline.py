"""``nirvis demo``: every stage of the paper's system on RAP3DF, each cached by its inputs and configuration.

Stages (paper Sec. 3-5), each a folder of :class:`~nirvis.demo.cache.StageCache`:

1. ``features``: align and embed every face the splits use (the frozen VIS network; the feature cache of
   :class:`~nirvis.pipeline.Recognizer` keeps the per-image work).
2. ``mine``: registered NIR/VIS patch pairs (Sec. 3.1) of the hallucination model's training people, each person
   mined once (per-person parts under ``parts/``, kept and shared by every run with the same mining settings).
3. ``train``: the Y, Cb, Cr CNNs (Sec. 3, ``cpu`` preset), seeded and limited by steps (not by time), so that
   the same settings give the same model on the same machine.
4. ``hallucinate``: every NIR face the splits use, hallucinated (eq. (1) blend) and embedded.
5. ``fit``: LR (Sec. 4), MS and ITML on each split's training people, for raw features, and LR on the
   hallucinated ones (``H+LR``); one stage folder per row and split.
6. ``evaluate``: Table 2's rows on every split: rank-1, VR@FAR=1% and 0.1% (the layout of ``nirvis evaluate
   --json``).
7. ``sweep`` (only with :attr:`DemoConfig.alpha_sweep`): rank-1 of ``H`` against eq. (1)'s α, both readings
   (Fig. 7).

Each fit keeps its fitted embedding (``embedding.npz`` + ``.json``) beside its transformed features; the results
list them (``demo.fits``), and the report projects a few test people's features through them (Fig. 6).

**CASIA NIR-VIS 2.0** (``dataset="casia"``, for users who hold it): :data:`CASIA_VIEW2` is the paper's Table 3
(View 2, no hallucination: stages 2-4 are skipped), :data:`CASIA_SIXFOLD` its Table 2 (the 6-fold protocol). CASIA's
folds share no training people, so each fold gets its own hallucination model (stages 2-4 once per fold).

**RAP3DF: one hallucination model for every split.** The people of the 2017 set train in every split of the RAP3DF
protocol (only the 2019 people are split 24/24; :func:`~nirvis.datasets.rap3df.rap3df_splits`), so a model trained
on patches of 2017 people has seen no test person of any split; this is checked for every split. Training one
model instead of ten, on the patches of the first captures of each person (:attr:`DemoConfig.captures_per_person`),
is what keeps a first run of the whole demo within minutes on a 2-core CPU: ten models would need every split's 24
training people of 2019 mined as well, at about 10 s of mining per person and pair of frames.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from inspect import signature
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nirvis._io import atomic_save_npz, atomic_write_json, file_digest, read_json
from nirvis.datasets.base import Sample, Split
from nirvis.demo.cache import PendingStage, StageCache, StageResult
from nirvis.errors import NirvisError
from nirvis.pipeline import Failure, FeatureSet, Recognizer

__all__ = ["DemoConfig", "FULL", "QUICK", "CASIA_VIEW2", "CASIA_SIXFOLD", "DemoProgress", "DemoResult", "DemoError", "run_demo", "STAGES",
           "ROW_ORDER", "model_people"]

log = logging.getLogger(__name__)

#: The stages, in order, with what each shows on its progress bar.
STAGES: tuple[tuple[str, str], ...] = (
    ("features", "align + embed"),
    ("mine", "mine patches"),
    ("train", "train H"),
    ("hallucinate", "hallucinate"),
    ("fit", "fit LR, MS, ITML"),
    ("evaluate", "evaluate"),
    ("sweep", "alpha sweep"),
)

#: The α grid of ``nirvis demo --alpha-sweep`` (paper Fig. 7 sweeps [0, 1]): 7 settings with the two readings,
#: each hallucinating every probe once (about 290 NIR faces over RAP3DF's 10 splits).
SWEEP_ALPHAS = (0.0, 0.3, 0.6, 1.0)

#: Table 2's rows, in the order they are printed (those a configuration does not compute are left out).
ROW_ORDER = ("raw", "H", "LR", "H+LR", "itml", "lmnn", "MS", "oracle-VIS")

#: Stem of the fitted embedding a fit stage keeps beside its transformed features (``embedding.npz`` + ``.json``,
#: :func:`nirvis.embedding.io.save_embedding`).
FIT_EMBEDDING = "embedding"

#: Learned embeddings (``nirvis evaluate -e``) the demo can fit on raw features; ``lowrank`` is also fitted on
#: hallucinated ones (``H+LR``).
EMBEDDINGS = ("lowrank", "itml", "lmnn", "ms")


class DemoError(NirvisError, ValueError):
    """The demo cannot run with these data or settings (the message says why)."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo computes. :data:`FULL` and :data:`QUICK` are the two runs of ``nirvis demo``.

    Attributes
    ----------
    name
        ``"full"`` or ``"quick"`` (printed, and written in the results).
    splits
        Indices of the protocol's splits to evaluate (``None``: all 10).
    train_2019_only
        Fit the embeddings (LR, MS, ITML, H+LR) on each split's training people of the 2019 set only, leaving out
        the 2017 set (a smaller training set, so that fewer NIR faces are hallucinated: the quick run).
    mine_people
        Train the hallucination model on the first this many people (sorted ids) of the 2017 set who train in
        every split (``None``: all 59); on CASIA, each split's model on the first this many of its training
        people.
    captures_per_person
        Mine the first this many captures of each of them (capture-id order; ``None``: all): each NIR frame
        against each VIS frame, so ``k`` captures give ``k`` pairs of simultaneous frames and ``k (k - 1)``
        others, at about a second of mining per pair of frames.
    train_epochs, train_max_steps
        Training stops after this many passes over the patches or this many steps, whichever comes first.
    batch_size, seed, threads
        Training's patches per step, seed (initialisation, validation people, shuffling) and torch threads (the
        weights repeat bit for bit with the same number). One thread: on a 2-core machine shared with other work,
        the small ``cpu`` networks took 0.29 s a step with one thread and 1.03 s with two.
    alpha, reading
        Eq. (1) blend of the hallucinated luminance with the NIR (paper: 0.6, LoG).
    embeddings
        Learned embeddings fitted on raw features: among ``lowrank`` (row LR, and H+LR), ``itml``, ``lmnn``,
        ``ms``.
    fit_people
        Fit the embeddings on the first this many training people of each split (sorted ids; ``None``: all).
        CASIA's splits train on hundreds of people, whose NIR faces would all be hallucinated for H+LR.
    hallucination
        Run stages 2-4 and the rows ``H`` and ``H+LR`` (CASIA's View 2 table, the paper's Table 3, has none).
    oracle
        Add the row ``oracle-VIS`` (each probe replaced by the VIS frame taken with it).
    alpha_sweep
        Stage 7 (paper Fig. 7): rank-1 of ``H`` at each of these α, for both readings of eq. (1), on every
        split's probes (each NIR probe hallucinated once per setting; α 0 is the same for both readings). Empty:
        no sweep.
    """

    name: str = "full"
    splits: tuple[int, ...] | None = None
    train_2019_only: bool = False
    mine_people: int | None = None
    captures_per_person: int | None = 2
    train_epochs: int = 10
    train_max_steps: int = 1000
    batch_size: int = 64
    seed: int = 0
    threads: int = 1
    alpha: float = 0.6
    reading: str = "log"
    embeddings: tuple[str, ...] = ("lowrank", "itml", "ms")
    oracle: bool = True
    fit_people: int | None = None
    hallucination: bool = True
    alpha_sweep: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if any(not (isinstance(a, (int, float)) and 0 <= a <= 1) for a in self.alpha_sweep):
            raise ValueError(f"DemoConfig.alpha_sweep: every alpha must be in [0, 1], got {list(self.alpha_sweep)}")
        bad = [e for e in self.embeddings if e not in EMBEDDINGS]
        if bad:
            raise ValueError(f"DemoConfig.embeddings: {bad} not among {list(EMBEDDINGS)}")
        for name in ("mine_people", "captures_per_person", "fit_people"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"DemoConfig.{name} must be >= 1 or None, got {v}")
        if min(self.train_epochs, self.train_max_steps, self.batch_size, self.threads) < 1:
            raise ValueError("DemoConfig: train_epochs, train_max_steps, batch_size and threads must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["splits"] = None if self.splits is None else list(self.splits)
        d["embeddings"] = list(self.embeddings)
        d["alpha_sweep"] = [float(a) for a in self.alpha_sweep]
        return d


#: ``nirvis demo``: the 10 splits, every row, H trained on the 59 people of 2017 (2 captures each), <= 1000 steps.
FULL = DemoConfig()

#: ``nirvis demo --dataset casia``, first part: the paper's Table 3 (CASIA NIR-VIS 2.0 View 2, 10 folds): raw,
#: ITML, LMNN and LR, no hallucination; the embeddings are fitted on 200 training people of each fold (each fold
#: trains on every person outside its test people: about 12,000 images).
CASIA_VIEW2 = DemoConfig(name="casia-view2", embeddings=("itml", "lmnn", "lowrank"), oracle=False, fit_people=200,
                         hallucination=False)

#: ``nirvis demo --dataset casia``, second part: the paper's Table 2 (the person-disjoint 6-fold protocol) with
#: hallucination: one model per fold, trained on the patches of the first 40 training people of the fold (2
#: captures each); LR and H+LR fitted on 200 training people of the fold.
CASIA_SIXFOLD = DemoConfig(name="casia-sixfold", embeddings=("lowrank", "itml"), oracle=False, fit_people=200,
                           mine_people=40)

#: ``nirvis demo --quick``: split 0, the four main rows, H trained on the simultaneous frames of 12 people (about 50
#: steps), the embeddings fitted on the split's 24 training people of 2019 (fewer NIR faces to hallucinate).
QUICK = DemoConfig(name="quick", splits=(0,), train_2019_only=True, mine_people=12, captures_per_person=1,
                   train_max_steps=150, embeddings=("lowrank",), oracle=False)


class DemoProgress(Protocol):
    """What the demo tells about its stages (the command line draws a bar per stage)."""

    def begin(self, index: int, stage: str, title: str, total: int | None) -> None:
        """Stage ``index`` (1-based) of :data:`STAGES` starts, with ``total`` units of work (``None``: unknown)."""

    def update(self, completed: int, total: int | None = None, note: str = "") -> None:
        """``completed`` units of the current stage are done."""

    def end(self, result: StageResult, summary: str) -> None:
        """The current stage is finished (``result.cached``: found in the cache) and ``summary`` says what it did."""

    def note(self, message: str) -> None:
        """Something the user should read (e.g. waiting for another run)."""


class _Silent:
    def begin(self, index: int, stage: str, title: str, total: int | None) -> None:
        pass

    def update(self, completed: int, total: int | None = None, note: str = "") -> None:
        pass

    def end(self, result: StageResult, summary: str) -> None:
        pass

    def note(self, message: str) -> None:
        log.info("%s", message)


@dataclass
class DemoResult:
    """What :func:`run_demo` computed.

    Attributes
    ----------
    results
        The results in the layout of ``nirvis evaluate --json`` (``protocol``, ``results``, ``alignment``), plus
        ``demo``: the configuration, each stage's key, timing and whether it came from the cache, and the notes.
    results_path
        The evaluate stage's ``results.json`` (the same rows, without this run's timings).
    stages
        Each stage's :class:`~nirvis.demo.cache.StageResult` (``fit`` gathers its per-row, per-split folders).
    notes
        Sentences to print under the table (how H was trained, what was left out).
    """

    results: dict[str, Any]
    results_path: Path
    stages: list[StageResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- helpers

def _samples_digest(samples: Sequence[Sample]) -> str:
    """Digest of what the images are: id, person, modality, channel, path and the file's content (SHA-256).

    The content, not the modification time: a dataset copied, extracted or synced again keeps its stages
    (this machine's data folder gets new times every session, and every stage after the first was computed
    again). Hashing RAP3DF's 1198 images takes about 0.2 s."""
    h = hashlib.sha256()
    for s in samples:
        try:
            content = file_digest(s.path)
        except OSError:
            content = "unreadable"
        h.update(repr((s.capture_id, s.person, s.modality, s.channel, str(s.path), content)).encode())
    return h.hexdigest()[:20]


def _split_digest(split: Split) -> str:
    return hashlib.sha256(repr((split.name, [s.capture_id for s in split.train], [s.capture_id for s in split.gallery],
                                [s.capture_id for s in split.probes])).encode()).hexdigest()[:20]


def _save_features(path: Path, fs: FeatureSet) -> None:
    atomic_save_npz(path, capture_id=np.array([s.capture_id for s in fs.samples]), features=fs.features,
                    ok=fs.ok, methods=np.array(fs.methods))
    atomic_write_json(path.with_suffix(".failures.json"), [f.__dict__ for f in fs.failures])


def _load_features(path: Path, samples: Sequence[Sample]) -> FeatureSet:
    with np.load(path, allow_pickle=False) as z:
        ids, feats, ok, methods = z["capture_id"].tolist(), z["features"], z["ok"], z["methods"].tolist()
    if ids != [s.capture_id for s in samples]:
        raise DemoError(f"{path}: holds the features of other samples; delete the folder {path.parent} to compute "
                        "them again")
    failures = [Failure(**f) for f in read_json(path.with_suffix(".failures.json"), DemoError)]
    return FeatureSet(list(samples), feats, ok, [str(m) for m in methods], failures)


class _LayeredCache:
    """A :class:`~nirvis.features.cache.FeatureCache` look-alike: alignments from the shared cache (no face is
    detected twice), features of hallucinated faces in the stage's own folder (they belong to its model)."""

    def __init__(self, shared, own) -> None:
        self.shared, self.own = shared, own

    def _of(self, namespace: str):
        return self.shared if namespace == "align" and self.shared is not None else self.own

    def get(self, namespace: str, key: str):
        return self._of(namespace).get(namespace, key)

    def put(self, namespace: str, key: str, **arrays: np.ndarray) -> None:
        self._of(namespace).put(namespace, key, **arrays)


def _transform_rows(model, X: np.ndarray, modality: np.ndarray) -> np.ndarray:
    if "modality" in signature(model.transform).parameters:
        return np.asarray(model.transform(X, modality=modality), dtype=np.float32)
    return np.asarray(model.transform(X), dtype=np.float32)


def _fit_task(task: tuple) -> tuple[np.ndarray, float, Any]:
    """Fit ``method`` on training features and transform the evaluation features (often in a worker process);
    returns the transformed features, the seconds it took and the fitted embedding (saved by the stage)."""
    import time

    method, X, y, mod, Xe, mod_e, single_thread = task
    from nirvis.evaluation.configs import embedding_fitter

    t0 = time.perf_counter()
    limit = nullcontext()
    if single_thread:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(1)
    with limit, warnings.catch_warnings():
        # metric-learn says when it draws fewer pairs than asked (few people); the count is in its settings
        warnings.filterwarnings("ignore", message="Only generated", category=UserWarning)
        model = embedding_fitter(method)(X, y, mod)
        return _transform_rows(model, Xe, mod_e), time.perf_counter() - t0, model


def model_people(samples: Sequence[Sample], splits_all: Sequence[Split], n: int | None) -> list[str]:
    """The people of the 2017 set who train in every split (sorted ids), the first ``n`` of them."""
    always = set.intersection(*(set(sp.train_people) for sp in splits_all))
    tested = set().union(*(set(sp.test_people) for sp in splits_all))
    people = sorted(p for p in always - tested if any(s.person == p and s.meta.get("set") == "2017" for s in samples))
    return people if n is None else people[:n]


# ----------------------------------------------------------------------------------------------- the run

@dataclass
class _Run:
    config: DemoConfig
    cache: StageCache
    rec: Recognizer
    workers: int
    progress: DemoProgress
    stages: list[StageResult] = field(default_factory=list)
    label: str = ""  # the split whose hallucination model stages 2-4 are making, when there is one per split

    def stage(self, index: int, total: int | None) -> None:
        name, title = STAGES[index - 1]
        self.progress.begin(index, name, f"{title} ({self.label})" if self.label and 2 <= index <= 4 else title,
                            total)

    def counter(self) -> Callable[[int], None]:
        """A callback that adds ``n`` finished items to the current stage's bar."""
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            self.progress.update(done)

        return advance

    def done(self, result: StageResult, summary: str) -> StageResult:
        self.stages.append(result)
        self.progress.end(result, summary)
        return result


@dataclass(frozen=True)
class _ModelGroup:
    """One hallucination model: the people whose patches train it and the splits it serves (it must have seen
    none of their test people)."""

    people: list[str]
    served: tuple[Split, ...]
    label: str = ""


def _model_groups(dataset: str, every: Sequence[Sample], splits_all: Sequence[Split], splits: Sequence[Split],
                  config: DemoConfig) -> list[_ModelGroup]:
    """RAP3DF: one model for every split, trained on people of 2017 who train in all of them
    (:func:`model_people`). Other protocols (CASIA's six folds) have no such people: one model per evaluated
    split, trained on the first :attr:`DemoConfig.mine_people` of its training people (sorted ids)."""
    if dataset == "rap3df":
        people = model_people(every, splits_all, config.mine_people)
        if len(people) < 2:
            raise DemoError(f"the hallucination model needs the patches of at least 2 people of the 2017 set who "
                            f"train in every split; the data has {len(people)}")
        return [_ModelGroup(people, tuple(splits_all))]
    groups = []
    for sp in splits:
        people = sorted(sp.train_people)[:config.mine_people]
        if len(people) < 2:
            raise DemoError(f"split {sp.name}: the hallucination model needs at least 2 training people, it has "
                            f"{len(people)}")
        groups.append(_ModelGroup(people, (sp,), sp.name))
    return groups


def _first_people(split: Split, n: int | None) -> Split:
    """``split`` with its training set cut to the first ``n`` training people (sorted ids)."""
    if n is None:
        return split
    keep = set(sorted(split.train_people)[:n])
    return replace(split, train=tuple(s for s in split.train if s.person in keep))


def run_demo(data_root: str | os.PathLike, config: DemoConfig = FULL, *, stage_cache: StageCache,
             recognizer: Recognizer, workers: int = 2, progress: DemoProgress | None = None,
             dataset: str = "rap3df", protocol: str | None = None) -> DemoResult:
    """Run every stage of the system on a dataset's protocol (module docstring), each from the cache when its key
    is there.

    Parameters
    ----------
    data_root
        The data folder (holding ``rap3df/`` or ``casia/``) or the dataset's folder.
    config
        :data:`FULL`, :data:`QUICK`, :data:`CASIA_VIEW2`, :data:`CASIA_SIXFOLD` or another :class:`DemoConfig`.
    stage_cache
        Where the stages are kept (the command line: ``$NIRVIS_CACHE/demo``).
    recognizer
        The frozen network, with its feature cache (alignments are read from it by every stage).
    workers
        Processes for align + embed, mining and fitting.
    progress
        Told about every stage (default: nothing is shown).
    dataset, protocol
        As ``nirvis evaluate --dataset --protocol``: ``"rap3df"`` (its 10 splits), or ``"casia"`` with
        ``"view2"`` (Table 3) or ``"sixfold"`` (Table 2, one hallucination model per fold).

    Raises
    ------
    DemoError, DatasetError, NirvisError
        Data or settings that cannot be used; the message says what to do.
    """
    from nirvis.datasets import load_protocol

    progress = progress or _Silent()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if config.train_2019_only and dataset != "rap3df":
        raise DemoError(f"DemoConfig.train_2019_only: RAP3DF only, not {dataset}")
    protocol_name, splits_all, every = load_protocol(dataset, data_root, protocol)
    if config.splits is None:
        splits = list(splits_all)
    else:
        bad = [k for k in config.splits if not 0 <= k < len(splits_all)]
        if bad:
            raise DemoError(f"splits {bad}: {protocol_name} has splits 0..{len(splits_all) - 1}")
        splits = [splits_all[k] for k in config.splits]
    if config.train_2019_only:
        splits = [replace(sp, train=tuple(s for s in sp.train if s.meta.get("set") == "2019")) for sp in splits]
    splits = [_first_people(sp, config.fit_people) for sp in splits]
    if config.splits is not None or config.train_2019_only or config.fit_people is not None:
        name = config.name if config.name.startswith(dataset) else f"{dataset}-{config.name}"
        protocol_name = (f"{name}: split{'s' if len(splits) > 1 else ''} "
                         f"{', '.join(sp.name for sp in splits)}"
                         + (" (embeddings fitted on the split's training people of 2019)" if config.train_2019_only
                            else f" (embeddings fitted on the first {config.fit_people} training people of each "
                                 "split)" if config.fit_people is not None else ""))
    if dataset == "rap3df" and config.splits is None and not config.train_2019_only:
        samples = list(every)  # every capture: the alignment rate covers the whole dataset
    else:
        seen: dict[str, Sample] = {}
        for sp in splits:
            for s in (*sp.train, *sp.gallery, *sp.probes):
                seen.setdefault(s.capture_id, s)
        if config.oracle:  # the VIS frames taken with the probes
            pairs = {p.pair_id for sp in splits for p in sp.probes}
            for s in every:
                if s.capture_id in pairs:
                    seen.setdefault(s.capture_id, s)
        samples = list(seen.values())

    groups = _model_groups(dataset, every, splits_all, splits, config) if config.hallucination else []
    run = _Run(config, stage_cache, recognizer, workers, progress)
    hfs_of: dict[str, FeatureSet] = {}
    hal_key_of: dict[str, str] = {}
    models: list[tuple[_ModelGroup, StageResult, StageResult]] = []
    with stage_cache.lock(progress.note):
        fs, feat_stage = _features_stage(run, samples)
        fits = _Fits(run)
        try:
            raw_pending = _start_raw_fits(run, fits, fs, feat_stage, splits)
            for g in groups:
                run.label = g.label
                store_stage = _mine_stage(run, every, g.people)
                model_stage = _train_stage(run, store_stage, g.served)
                served = [sp for sp in splits if sp.name in {x.name for x in g.served}]
                hfs, hal_stage = _hallucinate_stage(run, fs, feat_stage, model_stage, served, g.served)
                models.append((g, store_stage, model_stage))
                for sp in served:
                    hfs_of[sp.name], hal_key_of[sp.name] = hfs, hal_stage.key
            run.label = ""
            _fit_stage(run, fits, raw_pending, fs, hfs_of, hal_key_of, splits)
        finally:
            fits.close(cancel=True)
        results_path, eval_stage = _evaluate_stage(run, protocol_name, splits, fs, feat_stage, hfs_of, hal_key_of,
                                                   fits)
        sweep = None
        if config.alpha_sweep and models:
            g, _, model_stage = models[0]
            served = [sp for sp in splits if sp.name in {x.name for x in g.served}]
            sweep = _sweep_stage(run, fs, feat_stage, model_stage, served, hfs_of[served[0].name])
    results = read_json(results_path, DemoError)
    notes = [_model_note(config, dataset, models)] if models else []
    if config.train_2019_only:
        notes.append("Quick run: one split; the embeddings (LR, H+LR) are fitted on the split's 24 training people "
                     "of 2019 only, so its rows are not those of the full demo (run nirvis demo for them).")
    results["demo"] = {
        "mode": config.name, "config": config.to_dict(), "notes": notes, "dataset": dataset,
        "protocol_arg": protocol,
        "hallucination_model": str(models[0][2].path / "model") if models else None,
        # where the report (nirvis report) finds the stages' files and the aligned faces
        "data_root": str(Path(data_root).resolve()), "stage_cache": str(stage_cache.root.resolve()),
        # the report aligns its faces the same way
        "landmark_model": recognizer.aligner.config.landmark_model,
        "feature_cache": (str(Path(recognizer.cache.root).resolve())
                          if getattr(recognizer.cache, "root", None) is not None else None),
        "stages": [{"stage": r.stage, "key": r.key, "path": str(r.path), "cached": r.cached,
                    "seconds": round(r.seconds, 3), "computed_seconds": round(r.computed_seconds, 3), "info": r.info}
                   for r in run.stages],
        # each fitted embedding (transformed.npz, embedding.npz/.json) by row and split: the report's Fig. 6
        "fits": [{"row": row, "split": split, "path": str(path)} for (row, split), path in sorted(fits.folders.items())],
    }
    if sweep is not None:
        results["demo"]["alpha_sweep"] = sweep
    return DemoResult(results, results_path, run.stages, notes)


def _model_note(config: DemoConfig, dataset: str, models: list) -> str:
    """How H was trained, for the notes under the table."""
    g, store_stage, model_stage = models[0]
    n_model = model_stage.info.get("train_people", 0) + model_stage.info.get("val_people", 0)
    how = (f"{config.train_epochs} epochs or {config.train_max_steps} steps, whichever comes first; 'cpu' preset, "
           f"seed {config.seed}")
    blend = f"Eq. (1) blend: alpha {config.alpha:g} ({config.reading})."
    if len(models) == 1 and dataset == "rap3df":
        return (f"H: one hallucination model serves every split. It was trained for {model_stage.info.get('steps', '?')} "
                f"steps ({how}) on {store_stage.info.get('pairs_stored', '?')} patch pairs (with flips) of {n_model} "
                f"people of the 2017 set ({_captures(config)}). They are training people in every split, so the model "
                f"has seen no test person of any split (checked for each). {blend}")
    steps = ", ".join(f"{g.label} {m.info.get('steps', '?')}" for g, _, m in models)
    return (f"H: one hallucination model per split, each trained ({how}) on the patches of the first "
            f"{len(g.people)} training people of its split ({_captures(config)}); it has seen no test person of its "
            f"split (checked). Steps: {steps}. {blend}")


def _captures(config: DemoConfig) -> str:
    k = config.captures_per_person
    return "every capture of each" if k is None else "the first capture of each" if k == 1 else \
        f"the first {k} captures of each"


# ----------------------------------------------------------------------------------------------- 1. features

#: Faces per in-process probe of the feature cache, and the time per face below which they came from it.
_PROBE, _CACHED_S = 64, 0.02


def _featurize(rec: Recognizer, samples: list[Sample], workers: int, progress: Callable[[int], None]) -> FeatureSet:
    """``rec.featurize`` of ``samples``, in this process while the features come from the cache (starting
    worker processes costs seconds), in ``workers`` processes from the first chunk that needs real work."""
    import time

    fs: FeatureSet | None = None
    start = 0
    while start < len(samples):
        chunk = samples[start:start + _PROBE]
        t0 = time.perf_counter()
        part = rec.featurize(chunk, progress=progress)
        fs = part if fs is None else fs.updated(part)
        start += len(chunk)
        if workers > 1 and time.perf_counter() - t0 > _CACHED_S * len(chunk):
            break
    if start < len(samples):
        rest = rec.featurize(samples[start:], workers=workers, progress=progress)
        fs = rest if fs is None else fs.updated(rest)
    if fs is None:
        return rec.featurize([])
    return fs


def _features_stage(run: _Run, samples: list[Sample]) -> tuple[FeatureSet, StageResult]:
    rec = run.rec
    cfg = {"embedder": rec.embedder.fingerprint, "aligner": rec.aligner.fingerprint}
    run.stage(1, len(samples))
    got = run.cache.begin("features", cfg, [_samples_digest(samples)])
    if isinstance(got, PendingStage):
        advance = run.counter()
        fs = _featurize(rec, samples, run.workers, advance)
        _save_features(got.work / "features.npz", fs)
        got = run.cache.commit(got, {"images": len(samples), "not_aligned": len(fs.failures)})
    else:
        fs = _load_features(got.path / "features.npz", samples)
    run.done(got, f"{len(samples)} images, {len(fs.failures)} not aligned")
    return fs, got


# ----------------------------------------------------------------------------------------------- 2. mine

def _mine(jobs: list, store: Path, mining, workers: int, parts: Path, progress: Callable) -> dict[str, Any]:
    """Mine ``jobs`` into ``store`` (resumable per person; parts shared in ``parts``)."""
    from nirvis.mining.miner import mine_store

    return mine_store(jobs, store, mining, workers=workers, parts_dir=parts, progress=progress,
                      meta={"made_by": "nirvis demo", "people": "the training people of the demo's model"})


def _mine_stage(run: _Run, every: Sequence[Sample], people: list[str]) -> StageResult:
    from nirvis.mining.config import MiningConfig
    from nirvis.mining.miner import PersonJob, job_digest, jobs_from_samples

    k = run.config.captures_per_person
    mining = MiningConfig()
    jobs = [PersonJob(j.person, j.nir[:k], j.vis[:k]) if k is not None else j
            for j in jobs_from_samples(every, people)]
    digests = [job_digest(j, False) for j in jobs]
    run.stage(2, len(jobs))
    got = run.cache.begin("mine", {"mining": mining.to_dict(), "people": people, "captures_per_person": k}, digests)
    if isinstance(got, PendingStage):
        # Per-person parts shared by every demo run with these settings (a larger run reuses a smaller one's).
        parts = run.cache.root / "parts" / hashlib.sha256(f"{mining.fingerprint()}|{k}".encode()).hexdigest()[:16]
        summary = _mine(jobs, got.work / "patches.h5", mining, run.workers, parts,
                        lambda done, total, person: run.progress.update(done, total))
        if summary["pairs_stored"] == 0:
            raise DemoError(f"mining kept no patch pair from the {len(jobs)} people; the hallucination model has "
                            "nothing to train on")
        got = run.cache.commit(got, {key: summary[key] for key in ("people", "windows_tried", "pairs_kept",
                                                                 "pairs_stored") if key in summary})
    run.done(got, f"{got.info.get('pairs_stored', '?')} patch pairs (with flips) of {len(jobs)} people, "
                  f"{got.info.get('windows_tried', '?')} windows tried")
    return got


# ----------------------------------------------------------------------------------------------- 3. train

def _train(store: Path, out: Path, config, forbidden: list[str], progress: Callable) -> dict[str, Any]:
    """Train the hallucination CNNs (resumes from ``out``'s checkpoint); the store must hold none of ``forbidden``."""
    from nirvis.hallucination.train import train_hallucination

    return train_hallucination(store, out, config, forbidden_people=forbidden, progress=progress)


def _train_stage(run: _Run, store_stage: StageResult, splits_all: Sequence[Split]) -> StageResult:
    from nirvis.hallucination.train import TrainConfig

    c = run.config
    tc = TrainConfig(preset="cpu", epochs=c.train_epochs, max_steps=c.train_max_steps, batch_size=c.batch_size,
                     seed=c.seed, threads=c.threads, checkpoint_every=100, keep_checkpoint=True)
    tc.validate()
    tested = sorted(set().union(*(set(sp.test_people) for sp in splits_all)))
    run.stage(3, None)
    settings = {k: v for k, v in tc.to_dict().items() if k not in ("checkpoint_every", "log_every")}
    got = run.cache.begin("train", settings, [store_stage.key])
    if isinstance(got, PendingStage):
        summary = _train(store_stage.path / "patches.h5", got.work / "model", tc, tested,
                         lambda step, total, info: run.progress.update(step, total))
        val = summary.get("val") or {}
        got = run.cache.commit(got, {"steps": summary["steps"], "epochs_completed": summary["epochs_completed"],
                                     "train_people": summary["train_people"], "val_people": summary["val_people"],
                                     "val_mse": val})
    info = got.info
    val = ", ".join(f"{ch} {v:.4f}" for ch, v in (info.get("val_mse") or {}).items()) or "n/a"
    run.done(got, f"{info.get('steps')} steps ({info.get('epochs_completed')} epochs); validation MSE {val}")
    return got


# ----------------------------------------------------------------------------------------------- 4. hallucinate

def _hallucinate(rec: Recognizer, model, nir: list[Sample], blend, own: Path, progress: Callable[[int], None],
                 workers: int = 1) -> FeatureSet:
    """Features of the hallucinated ``nir`` faces; each face's feature is kept in ``own`` as it is computed (a
    killed run goes on from there), alignments come from ``rec``'s cache. With ``workers`` processes, each
    hallucinating and embedding its chunks with one thread: dlib's network, not the small CNNs, is most of the
    time, and it runs on one core."""
    from nirvis.features.cache import FeatureCache
    from nirvis.hallucination.infer import HallucinatedFaces, Hallucinator

    hal = HallucinatedFaces(Hallucinator(model, blend, "fft"))
    hrec = Recognizer(rec.embedder, align=rec.aligner.config, cache=_LayeredCache(rec.cache, FeatureCache(own)),
                      nir_transform=hal)
    return hrec.featurize(nir, workers=workers, progress=progress)


def _hallucinate_stage(run: _Run, fs: FeatureSet, feat_stage: StageResult, model_stage: StageResult,
                       splits: Sequence[Split], splits_all: Sequence[Split]) -> tuple[FeatureSet, StageResult]:
    from nirvis.hallucination.blend import BlendConfig
    from nirvis.hallucination.evaluate import check_model_people
    from nirvis.hallucination.io import load_model

    c = run.config
    model = load_model(model_stage.path / "model")
    for sp in splits_all:  # one model for every split: it must not have seen any split's test person
        check_model_people(model, sp, str(model_stage.path / "model"))
    seen: dict[str, Sample] = {}
    for sp in splits:
        for s in (*sp.train, *sp.probes):
            if s.modality == "nir":
                seen.setdefault(s.capture_id, s)
    nir = list(seen.values())
    run.stage(4, len(nir))
    rec = run.rec
    got = run.cache.begin("hallucinate", {"alpha": c.alpha, "reading": c.reading, "method": "fft",
                                          "embedder": rec.embedder.fingerprint, "aligner": rec.aligner.fingerprint},
                          [model_stage.key, feat_stage.key, _samples_digest(nir)])
    if isinstance(got, PendingStage):
        advance = run.counter()
        hfs = _hallucinate(rec, model, nir, BlendConfig(alpha=c.alpha, reading=c.reading), got.work / "faces",
                           advance, run.workers)
        _save_features(got.work / "features.npz", hfs)
        shutil.rmtree(got.work / "faces", ignore_errors=True)
        got = run.cache.commit(got, {"faces": len(nir), "not_aligned": len(hfs.failures)})
    else:
        hfs = _load_features(got.path / "features.npz", nir)
    run.done(got, f"{len(nir)} NIR faces of the splits' training people and probes")
    return fs.updated(hfs), got


# ----------------------------------------------------------------------------------------------- 5. fit

@dataclass(frozen=True)
class _Fit:
    row: str
    method: str
    split: Split
    source: str  # "raw" or "H"


class _Fits:
    """The fits of stage 5 and where they stand. Fits of raw features need only stage 1: with more than one
    worker they start in a background process as soon as the features are there, and run while the model trains
    and the faces are hallucinated (which leave a core idle); their stage folders are committed as each ends, so
    a killed run keeps them."""

    def __init__(self, run: _Run) -> None:
        import threading

        self.run = run
        self.folders: dict[tuple[str, str], Path] = {}
        self.errors: dict[tuple[str, str], str] = {}
        self.results: list[StageResult] = []
        self.futures: list = []
        self.pool = None
        self._lock = threading.Lock()
        self.started = 0.0

    def begin(self, fits: list[_Fit], fs: FeatureSet, source_key: str) -> list[tuple[_Fit, PendingStage]]:
        """Look the fits up; return those to compute."""
        from nirvis.evaluation.configs import DEFAULT_PARAMS

        pending = []
        for f in fits:
            got = self.run.cache.begin("fit", {"method": f.method, "params": DEFAULT_PARAMS.get(f.method, {}),
                                               "features": f.source, "saves": FIT_EMBEDDING},
                                       [source_key, _split_digest(f.split)])
            if isinstance(got, StageResult):
                self._done(f, got)
            else:
                pending.append((f, got))
        pending.sort(key=lambda fp: fp[0].method != "itml")  # ITML takes far longer than the others: first
        return pending

    def _done(self, f: _Fit, result: StageResult) -> None:
        with self._lock:
            self.folders[(f.row, f.split.name)] = result.path
            self.results.append(result)

    def _commit(self, f: _Fit, p: PendingStage, fs: FeatureSet, Z: np.ndarray, seconds: float, model) -> None:
        from nirvis.embedding.io import save_embedding

        ev = [*f.split.gallery, *f.split.probes]
        _, eok = fs.take(ev)
        X = np.full((len(ev), Z.shape[1]), np.nan, np.float32)
        X[eok] = Z
        atomic_save_npz(p.work / "transformed.npz", capture_id=np.array([s.capture_id for s in ev]), features=X,
                        ok=eok)
        # the fitted map itself (npz + json), for the report's Fig. 6 and for reuse (nirvis evaluate --embedding)
        save_embedding(model, p.work / FIT_EMBEDDING, self.run.rec.embedder.fingerprint,
                       train_people=f.split.train_people)
        self._done(f, self.run.cache.commit(p, {"row": f.row, "split": f.split.name, "dim": int(Z.shape[1])},
                                            seconds=seconds))

    def _failed(self, f: _Fit, exc: BaseException) -> None:
        with self._lock:
            self.errors[(f.row, f.split.name)] = f"{type(exc).__name__}: {exc}"

    def submit(self, pending: list[tuple[_Fit, PendingStage]], fs: FeatureSet, workers: int) -> None:
        """Start ``pending`` in ``workers`` background processes (committed as each ends)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if not pending:
            return
        if self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        for f, p in pending:
            fut = self.pool.submit(_fit_task, _fit_inputs(f, fs, single_thread=True))

            def finished(fut, f=f, p=p) -> None:
                if fut.cancelled():
                    return
                exc = fut.exception()
                if exc is not None:
                    self._failed(f, exc)
                    return
                try:
                    Z, seconds, model = fut.result()
                    self._commit(f, p, fs, Z, seconds, model)
                except Exception as err:  # noqa: BLE001 - reported as the row's error, never lost
                    self._failed(f, err)

            fut.add_done_callback(finished)
            self.futures.append(fut)

    def run_here(self, pending: list[tuple[_Fit, PendingStage]], fs: FeatureSet) -> None:
        """Compute ``pending`` in this process."""
        for f, p in pending:
            try:
                Z, seconds, model = _fit_task(_fit_inputs(f, fs, single_thread=False))
            except (NirvisError, ValueError, np.linalg.LinAlgError) as exc:
                self._failed(f, exc)
                continue
            self._commit(f, p, fs, Z, seconds, model)
            self.run.progress.update(len(self.results) + len(self.errors))

    def wait(self) -> None:
        """Wait for the background fits, showing them on the stage's bar."""
        from concurrent.futures import wait

        pending = set(self.futures)
        while pending:
            _, pending = wait(pending, timeout=0.5)
            with self._lock:
                n = len(self.results) + len(self.errors)
            self.run.progress.update(n)
        self.close()

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self.pool = None


def _fit_inputs(f: _Fit, fs: FeatureSet, single_thread: bool) -> tuple:
    tX, tok = fs.take(f.split.train)
    train = [s for s, o in zip(f.split.train, tok) if o]
    ev = [*f.split.gallery, *f.split.probes]
    eX, eok = fs.take(ev)
    return (f.method, tX[tok], np.array([s.person for s in train]), np.array([s.modality for s in train]),
            eX[eok], np.array([s.modality for s, o in zip(ev, eok) if o]), single_thread)


def _raw_fits(run: _Run, splits: Sequence[Split]) -> list[_Fit]:
    from nirvis.evaluation.configs import CONFIG_NAMES

    return [_Fit(CONFIG_NAMES[m], m, sp, "raw") for sp in splits for m in run.config.embeddings]


def _start_raw_fits(run: _Run, fits: _Fits, fs: FeatureSet, feat_stage: StageResult, splits: Sequence[Split]
                    ) -> list[tuple[_Fit, PendingStage]]:
    """Stage 5's fits of raw features: started in the background when there is more than one worker (returns
    nothing left to do), else returned to be computed at stage 5."""
    import time

    fits.started = time.perf_counter()
    pending = fits.begin(_raw_fits(run, splits), fs, feat_stage.key)
    if run.workers > 1 and pending:
        fits.submit(pending, fs, workers=1)
        return []
    return pending


def _fit_stage(run: _Run, fits: _Fits, raw_pending: list[tuple[_Fit, PendingStage]], fs: FeatureSet,
               hfs_of: dict[str, FeatureSet], hal_key_of: dict[str, str], splits: Sequence[Split]) -> _Fits:
    """Stage 5: the embeddings on raw features (started earlier, :func:`_start_raw_fits`), LR on hallucinated ones
    (each split's from its hallucination stage: ``hfs_of`` and ``hal_key_of`` by split name)."""
    import time

    t0 = time.perf_counter()
    h_splits = [sp for sp in splits if sp.name in hfs_of] if "lowrank" in run.config.embeddings else []
    total = len(_raw_fits(run, splits)) + len(h_splits)
    run.stage(5, total)
    with fits._lock:
        run.progress.update(len(fits.results) + len(fits.errors))
    by_source: dict[str, tuple[FeatureSet, list[_Fit]]] = {}  # one entry per hallucination stage
    for sp in h_splits:
        by_source.setdefault(hal_key_of[sp.name], (hfs_of[sp.name], []))[1].append(_Fit("H+LR", "lowrank", sp, "H"))
    h_pending = [(hfs, fits.begin(group, hfs, key)) for key, (hfs, group) in by_source.items()]
    background = bool(fits.futures)
    if run.workers > 1 and sum(len(p) for _, p in h_pending) > 2:
        for hfs, pending in h_pending:
            fits.submit(pending, hfs, workers=run.workers)
        h_pending = []
    fits.run_here(raw_pending, fs)
    for hfs, pending in h_pending:
        fits.run_here(pending, hfs)
    fits.wait()
    cached = sum(r.cached for r in fits.results)
    key = hashlib.sha256("|".join(sorted(r.key for r in fits.results)).encode()).hexdigest()[:20]
    wall = time.perf_counter() - t0
    summary = StageResult("fit", key, run.cache.root / "fit", cached == len(fits.results), wall,
                          sum(r.computed_seconds for r in fits.results),
                          {"fits": total, "cached": cached, "failed": len(fits.errors),
                           "seconds_since_features": round(time.perf_counter() - fits.started, 3)})
    rows = sorted({row for row, _ in fits.folders} | {row for row, _ in fits.errors})
    run.done(summary, f"{total} fits ({', '.join(rows)} x {len(splits)} split{'s' if len(splits) > 1 else ''}), "
                      f"{cached} from the cache" + (f", {len(fits.errors)} FAILED" if fits.errors else "")
                      + (" (the raw ones started after stage 1)" if background else ""))
    return fits


# ----------------------------------------------------------------------------------------------- 6. evaluate

def _evaluate_stage(run: _Run, protocol: str, splits: Sequence[Split], fs: FeatureSet, feat_stage: StageResult,
                    hfs_of: dict[str, FeatureSet], hal_key_of: dict[str, str], fits: _Fits
                    ) -> tuple[Path, StageResult]:
    from nirvis.evaluation.protocols import SplitConfig, evaluate_splits, oracle_vis_features

    c = run.config
    fitted, errors = fits.folders, fits.errors
    rows = [r for r in ROW_ORDER if r in {"raw", "oracle-VIS"} | ({"H"} if hfs_of else set())
            | {row for row, _ in (*fitted, *errors)}]
    if not c.oracle:
        rows.remove("oracle-VIS")
    # a failed fit is not a stage: the table records it, and the next run tries it again
    inputs = ([feat_stage.key, *sorted(set(hal_key_of.values()))] + sorted(p.name for p in fitted.values())
              + sorted(f"failed:{row}:{split}" for row, split in errors))
    run.stage(6, len(rows) * len(splits))
    got = run.cache.begin("evaluate", {"protocol": protocol, "rows": rows, "splits": [sp.name for sp in splits]},
                          inputs)
    if isinstance(got, PendingStage):
        def transformed(row: str) -> SplitConfig:
            def features(split: Split) -> FeatureSet:
                path = fitted[(row, split.name)] / "transformed.npz"
                with np.load(path, allow_pickle=False) as z:
                    ids, X, ok = z["capture_id"].tolist(), z["features"], z["ok"]
                ev = [*split.gallery, *split.probes]
                if ids != [s.capture_id for s in ev]:
                    raise DemoError(f"{path}: holds other faces than split {split.name}'s gallery and probes")
                return FeatureSet(ev, X, ok, [""] * len(ev))
            return SplitConfig(features)

        configs: dict[str, Any] = {}
        failed: dict[str, dict[str, Any]] = {}
        for row in rows:
            bad = [(split, err) for (r, split), err in sorted(errors.items()) if r == row]
            if bad:  # the row of a configuration that could not be fitted, as evaluate_splits records one
                nan = float("nan")
                failed[row] = {"config": row, "error": f"{protocol} split {bad[0][0]}, configuration {row!r}: fitting "
                                                       f"failed ({bad[0][1]})" + (f"; and {len(bad) - 1} more split(s)"
                                                                                  if len(bad) > 1 else ""),
                               "rank1_mean": nan, "rank1_std": nan, "vr_far_1e-2": nan, "vr_far_1e-2_std": nan,
                               "vr_far_1e-3": nan, "vr_far_1e-3_std": nan, "n_probes": 0, "n_failed_alignment": 0,
                               "n_gallery_failed": 0, "n_splits": len(splits), "splits": []}
            elif row == "raw":
                configs[row] = None
            elif row == "H":
                configs[row] = SplitConfig(lambda split: hfs_of[split.name])
            elif row == "oracle-VIS":
                configs[row] = SplitConfig(oracle_vis_features(fs))
            else:
                configs[row] = transformed(row)
        done = 0

        def advance(message: str) -> None:
            nonlocal done
            done += 1
            run.progress.update(done, note=message)

        report = evaluate_splits(protocol, splits, fs, configs, progress=advance, on_error="record")
        scored = {r["config"]: r for r in report.results}
        report.results = [scored[row] if row in scored else failed[row] for row in rows]
        atomic_write_json(got.work / "results.json", report.to_dict())
        got = run.cache.commit(got, {"rows": rows, "splits": len(splits)})
    run.done(got, f"{len(rows)} rows x {len(splits)} split{'s' if len(splits) > 1 else ''}")
    return got.path / "results.json", got


# ----------------------------------------------------------------------------------------------- 7. alpha sweep

def _sweep_stage(run: _Run, fs: FeatureSet, feat_stage: StageResult, model_stage: StageResult,
                 splits: Sequence[Split], hfs: FeatureSet) -> dict[str, Any]:
    """Stage 7 (paper Fig. 7): rank-1 and VR@FAR=1% of ``H`` against α, for both readings of eq. (1).

    Only the probes are hallucinated (the gallery is VIS, and ``H`` fits nothing); each NIR probe once per
    setting, shared by the splits that test it. The demo's own α and reading come from stage 4's features
    (``hfs``); α 0 (the CNN luminance alone) is computed once for both readings. Returns ``{"alphas": [...], "probes": n, "readings": {reading: {"rank1": [...], "rank1_std": [...],
    "vr_far_1e-2": [...], "per_split_rank1": [[...] per alpha]}}}``, means over the splits.
    """
    from nirvis.evaluation.metrics import evaluate_identification, mean_std
    from nirvis.hallucination.blend import READINGS, BlendConfig
    from nirvis.hallucination.io import load_model

    c, rec = run.config, run.rec
    alphas = [float(a) for a in c.alpha_sweep]
    seen: dict[str, Sample] = {}
    for sp in splits:
        for s in sp.probes:
            if s.modality == "nir":
                seen.setdefault(s.capture_id, s)
    probes = list(seen.values())
    settings = [(rd, a) for rd in READINGS for a in alphas if a > 0 or rd == READINGS[0]]
    run.stage(7, len(settings) * len(probes))
    got = run.cache.begin("sweep", {"alphas": alphas, "readings": list(READINGS), "method": "fft",
                                    "embedder": rec.embedder.fingerprint, "aligner": rec.aligner.fingerprint},
                          [model_stage.key, feat_stage.key, _samples_digest(probes)])
    if isinstance(got, PendingStage):
        model = load_model(model_stage.path / "model")
        advance = run.counter()
        feats: dict[tuple[str, float], FeatureSet] = {}
        for reading, alpha in settings:
            if (reading, alpha) == (c.reading, c.alpha):  # stage 4 hallucinated these already
                feats[(reading, alpha)] = hfs
                advance(len(probes))
                continue
            own = got.work / "faces" / f"{reading}-{alpha:g}"
            feats[(reading, alpha)] = fs.updated(_hallucinate(rec, model, probes, BlendConfig(alpha=alpha, reading=reading),
                                                              own, advance, run.workers))
        table: dict[str, dict[str, list]] = {}
        for reading in READINGS:
            cell = table.setdefault(reading, {"rank1": [], "rank1_std": [], "vr_far_1e-2": [], "per_split_rank1": []})
            for alpha in alphas:
                f = feats[(reading if alpha > 0 else READINGS[0], alpha)]
                r1, vr = [], []
                for sp in splits:
                    gX, gok = f.take(sp.gallery)
                    pX, pok = f.take(sp.probes)
                    r = evaluate_identification(pX, [s.person for s in sp.probes], gX, [s.person for s in sp.gallery],
                                                pok, gallery_ok=gok)
                    r1.append(r.rank1)
                    vr.append(r.vr_far_1e2)
                cell["rank1"].append(mean_std(r1)[0])
                cell["rank1_std"].append(mean_std(r1)[1])
                cell["vr_far_1e-2"].append(mean_std(vr)[0])
                cell["per_split_rank1"].append(r1)
        sweep = {"alphas": alphas, "probes": len(probes), "splits": [sp.name for sp in splits], "readings": table,
                 "demo_alpha": c.alpha, "demo_reading": c.reading}
        atomic_write_json(got.work / "sweep.json", sweep)
        shutil.rmtree(got.work / "faces", ignore_errors=True)
        got = run.cache.commit(got, {"settings": len(settings), "probes": len(probes)})
    else:
        sweep = read_json(got.path / "sweep.json", DemoError)
    best = {rd: max(zip(v["rank1"], sweep["alphas"])) for rd, v in sweep["readings"].items()}
    run.done(got, f"H at {len(alphas)} alphas x {len(READINGS)} readings on {len(probes)} probes; best rank-1 "
                  + ", ".join(f"{rd} {100 * r:.1f} (alpha {a:g})" for rd, (r, a) in best.items()))
    return sweep
