"""Known face networks: what each file is, where it is found, where to get it, and its licence.

nirvis ships no network weights besides dlib's (CC0). The registry below (:data:`KNOWN_MODELS`) names the
ONNX networks that nirvis knows how to run, with the SHA-256 of the exact file, its licence, its input
conventions and where it comes from; :func:`find_model` looks a file up, :func:`install_model` copies one
in after checking it, and :func:`fetch_model` downloads one (opt-in, checksum verified, atomic).

A model file is looked up, in this order (:func:`search_dirs`):

1. ``models_dir`` (the command line's ``--models-dir``);
2. ``$NIRVIS_MODELS``;
3. ``~/.cache/nirvis/models`` (:func:`default_models_dir`: where ``nirvis models add`` / ``fetch`` put files);
4. ``../shared/models``, relative to the working directory;
5. ``models/`` beside the data folder (``--data``, else ``$NIRVIS_DATA``, else ``../shared/data``).

Importing this module loads neither onnxruntime nor OpenCV.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nirvis._io import atomic_write, file_digest
from nirvis.errors import NirvisError
from nirvis.features.base import Embedder, available_embedders, register_embedder
from nirvis.features.onnx import ARCFACE_112_TEMPLATE  # re-exported: the registry's reference template

if TYPE_CHECKING:  # pragma: no cover
    from nirvis.features.onnx import OnnxEmbedder, OnnxPreprocess

__all__ = [
    "ARCFACE_112_TEMPLATE",
    "KNOWN_MODELS",
    "ENV_VAR",
    "ChecksumError",
    "DownloadError",
    "ModelNotFoundError",
    "ModelSpec",
    "default_models_dir",
    "embedder_from_spec",
    "fetch_model",
    "find_model",
    "get_model_spec",
    "install_model",
    "known_embedder",
    "licence_notice",
    "model_status",
    "search_dirs",
    "spec_of_file",
]

log = logging.getLogger(__name__)

#: Environment variable naming a folder of model files.
ENV_VAR = "NIRVIS_MODELS"

Point = tuple[float, float]

# ARCFACE_112_TEMPLATE (imported above): the known networks are cut onto it from ArcFace's own keypoints (dlib's
# 68-point model); networks given as ``onnx:PATH`` are cut from dlib's 5 points with
# nirvis.features.onnx.ARCFACE_DLIB5_TEMPLATE, measured to put these five points where ArcFace expects them (3.9 px
# from them on average).


class ModelNotFoundError(NirvisError, FileNotFoundError):
    """A known model's file is in none of the places looked in."""


class ChecksumError(NirvisError, ValueError):
    """A file's SHA-256 is not the one registered for the model it is claimed to be."""


class DownloadError(NirvisError, OSError):
    """A model could not be downloaded (no network, server error, or no download address known)."""


@dataclass(frozen=True)
class ModelSpec:
    """One known network file.

    Attributes
    ----------
    name
        Registry name, also the embedder name (``--embedder NAME``) and the prefix of its fingerprint.
    filename
        File name looked for in each models folder.
    sha256
        SHA-256 of the file (64 hex digits); a file with another digest is refused.
    size_bytes
        Size of the file, in bytes (a download that grows past it is stopped).
    network
        What the network is, in words.
    licence
        The licence of the code and of the weights, in words.
    research_only
        True when the weights' terms allow research use only: commands then say so once per run.
    source
        Where the file comes from and how it was made, in words (shown when it cannot be downloaded).
    url
        Direct download address of exactly this file, or ``None`` when none is known.
    dim
        Length of the feature vector.
    input_size, mean, std, color_order, layout
        The network's input: ``(width, height)`` in pixels, per-channel ``(pixel - mean) / std`` with pixels
        in ``[0, 255]``, channel order and tensor layout (see :class:`~nirvis.features.onnx.OnnxPreprocess`).
    reference_template
        The 5-point alignment template the network was trained with, in input pixels.
    keypoints
        How the crop is cut (:attr:`nirvis.features.onnx.OnnxPreprocess.keypoints`): ``"arcface5"``, from
        ArcFace's own keypoints onto :attr:`reference_template` (the faces are aligned with dlib's 68-point
        model, whose training data allows research use only), or ``"dlib5"``, from dlib's 5 points.
    """

    name: str
    filename: str
    sha256: str
    size_bytes: int
    network: str
    licence: str
    research_only: bool
    source: str
    url: str | None
    dim: int
    input_size: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    color_order: str = "RGB"
    layout: str = "NCHW"
    reference_template: tuple[Point, ...] = ARCFACE_112_TEMPLATE
    keypoints: str = "arcface5"

    def preprocess(self, keypoints: str | None = None) -> OnnxPreprocess:
        """The :class:`~nirvis.features.onnx.OnnxPreprocess` of this network; ``keypoints`` overrides
        :attr:`keypoints` (e.g. ``"dlib5"`` to compare the two crops)."""
        from nirvis.features.onnx import ARCFACE_DLIB5_TEMPLATE, OnnxPreprocess

        if self.input_size != (112, 112) or self.reference_template != ARCFACE_112_TEMPLATE:
            raise NotImplementedError(f"{self.name}: only ArcFace's 112x112 template is mapped to dlib's points")
        return OnnxPreprocess(input_size=self.input_size, mean=self.mean, std=self.std,
                              color_order=self.color_order, layout=self.layout,  # type: ignore[arg-type]
                              template=ARCFACE_DLIB5_TEMPLATE,
                              keypoints=keypoints or self.keypoints,  # type: ignore[arg-type]
                              template5=self.reference_template)  # type: ignore[arg-type]


_EDGEFACE_SOURCE = (
    "Idiap's EdgeFace checkpoint {ckpt} (https://github.com/otroshi/edgeface), dequantised to float EdgeNeXt "
    "and exported to ONNX with convert_edgeface.py (beside the file in ../shared/models); no public address "
    "serves this ONNX file. The checkpoint's third-party copy: GitHub yayoimizuha/face_recognition_train, "
    "commit 3e631e35bf207a09aa2af79239961cfb14248c0a, checkpoints/{ckpt} (sha256 {ckpt_sha})"
)
_EDGEFACE_LICENCE = "code BSD-3-Clause; weights trained on WebFace12M: research use only"

#: The networks nirvis knows by name. Their files are never part of the repository.
KNOWN_MODELS: dict[str, ModelSpec] = {
    "edgeface-xs": ModelSpec(
        name="edgeface-xs",
        filename="edgeface_xs.onnx",
        sha256="46a67289ac451e3c5a71cee1b9f0bfc6590f2ee0258051ef9fc98e29e6483dcd",
        size_bytes=9_151_395,
        network="EdgeFace-XS (EdgeNeXt-x-small, Idiap), 512-D",
        licence=_EDGEFACE_LICENCE,
        research_only=True,
        source=_EDGEFACE_SOURCE.format(
            ckpt="edgeface_xs_q.pt", ckpt_sha="a31314377876ab9fa2a75e5638bc528efe79fd17d5c9c0a228fb7f846d7581a6"),
        url=None,
        dim=512,
    ),
    "edgeface-xxs": ModelSpec(
        name="edgeface-xxs",
        filename="edgeface_xxs.onnx",
        sha256="6bb17eda23c1ac0152d33f644b01c5da3a1e29c64e4261608de100f44b04d484",
        size_bytes=5_133_111,
        network="EdgeFace-XXS (EdgeNeXt-xx-small, Idiap), 512-D",
        licence=_EDGEFACE_LICENCE,
        research_only=True,
        source=_EDGEFACE_SOURCE.format(
            ckpt="edgeface_xxs_q.pt", ckpt_sha="46be7cc7e8d6e23501c0627fe5fbef101922ee9b85ccbef476987ab1a320b053"),
        url=None,
        dim=512,
    ),
}


def get_model_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` called ``name``; an unknown name lists the known ones."""
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}") from None


# -- where model files are -------------------------------------------------------------------------------

def default_models_dir() -> Path:
    """Where ``nirvis models add`` and ``fetch`` put files: ``$NIRVIS_MODELS``, else ``~/.cache/nirvis/models``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nirvis" / "models"


def search_dirs(models_dir: str | os.PathLike[str] | None = None,
                data_root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders a model file is looked for in, in order, without duplicates (see the module docstring).

    Parameters
    ----------
    models_dir
        An explicit folder (``--models-dir``), looked in first.
    data_root
        The data folder; ``models/`` beside it is looked in last. ``None``: the data folder nirvis would
        use (``$NIRVIS_DATA``, else ``../shared/data``), when there is one.
    """
    dirs: list[Path] = []
    if models_dir is not None:
        dirs.append(Path(models_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.home() / ".cache" / "nirvis" / "models")
    dirs.append(Path("../shared/models").resolve())  # relative to the working directory
    if data_root is None:
        from nirvis.data import find_data_root

        try:
            data_root = find_data_root(None)
        except NirvisError:
            data_root = None
    if data_root is not None:
        dirs.append(Path(data_root).expanduser().resolve().parent / "models")
    seen: set[Path] = set()
    out = []
    for d in dirs:
        key = d.resolve() if d.exists() else d.absolute()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _checked(path: Path, spec: ModelSpec) -> Path:
    digest = file_digest(path)
    if digest != spec.sha256:
        raise ChecksumError(f"{path}: sha256 {digest}, but {spec.name} ({spec.filename}) is {spec.sha256}; "
                            f"this is another file. Replace it: nirvis models add {spec.name} FILE")
    return path


def find_model(name: str, models_dir: str | os.PathLike[str] | None = None,
               data_root: str | os.PathLike[str] | None = None, *, verify: bool = True) -> Path:
    """The file of the known model ``name``: the first one found in :func:`search_dirs`.

    Parameters
    ----------
    name
        A name of :data:`KNOWN_MODELS`.
    models_dir, data_root
        As :func:`search_dirs`.
    verify
        Check the file's SHA-256 against the registry (about 20 ms for 10 MB).

    Raises
    ------
    ModelNotFoundError
        When no folder holds the file; the message names the file, every folder looked in, and how to add it.
    ChecksumError
        When the file found has another SHA-256 than the registered one (both digests are named).
    """
    spec = get_model_spec(name)
    dirs = search_dirs(models_dir, data_root)
    for d in dirs:
        path = d / spec.filename
        if path.is_file():
            return _checked(path, spec) if verify else path
    raise ModelNotFoundError(_how_to_add(spec, dirs))


def _how_to_add(spec: ModelSpec, dirs: Sequence[Path]) -> str:
    looked = "; ".join(str(d) for d in dirs)
    get = (f"download it with: nirvis models fetch {spec.name}" if spec.url
           else f"it cannot be downloaded by nirvis; it is made from {spec.source}")
    return (f"model {spec.name}: file {spec.filename} not found. Looked in: {looked}. "
            f"Add it with: nirvis models add {spec.name} /path/to/{spec.filename} "
            f"(or pass --models-dir DIR, or set ${ENV_VAR}=DIR); {get}")


def model_status(name: str, models_dir: str | os.PathLike[str] | None = None,
                 data_root: str | os.PathLike[str] | None = None) -> tuple[Path | None, str]:
    """``(path, state)`` of a known model: ``state`` is ``"installed"``, ``"missing"`` or ``"wrong checksum"``
    (``path`` is the first file found, checked or not, and ``None`` when missing)."""
    try:
        return find_model(name, models_dir, data_root), "installed"
    except ModelNotFoundError:
        return None, "missing"
    except ChecksumError:
        return find_model(name, models_dir, data_root, verify=False), "wrong checksum"


def spec_of_file(path: str | os.PathLike[str]) -> ModelSpec | None:
    """The known model whose registered SHA-256 is that of ``path``, or ``None``."""
    p = Path(path)
    sizes = {s.size_bytes for s in KNOWN_MODELS.values()}
    if not p.is_file() or p.stat().st_size not in sizes:
        return None
    digest = file_digest(p)
    return next((s for s in KNOWN_MODELS.values() if s.sha256 == digest), None)


# -- adding files ------------------------------------------------------------------------------------------

def install_model(name: str, source: str | os.PathLike[str],
                  models_dir: str | os.PathLike[str] | None = None) -> Path:
    """Copy ``source`` into the models folder as the known model ``name``, after checking its SHA-256.

    The copy is atomic (a temporary file beside the destination, renamed onto it) and checked again after
    copying, so an interrupted copy never leaves a file that looks installed.

    Parameters
    ----------
    name
        A name of :data:`KNOWN_MODELS`.
    source
        The file to add.
    models_dir
        Destination folder; default :func:`default_models_dir`.

    Returns
    -------
    pathlib.Path
        The installed file.

    Raises
    ------
    FileNotFoundError
        When ``source`` is not a file.
    ChecksumError
        When ``source``'s SHA-256 is not the registered one (both digests are named); nothing is written.
    """
    spec = get_model_spec(name)
    src = Path(source).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    digest = file_digest(src)
    if digest != spec.sha256:
        raise ChecksumError(f"{src}: sha256 {digest}, but {spec.name} ({spec.filename}) is {spec.sha256}; "
                            "not added. Is it the right file?")
    dst = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
    dst = dst / spec.filename
    if dst.is_file() and dst.resolve() == src.resolve():
        return dst

    def write(tmp: Path) -> None:
        shutil.copyfile(src, tmp)
        got = file_digest(tmp)
        if got != spec.sha256:  # the source changed while being copied, or the disk is failing
            raise ChecksumError(f"{dst}: the copy of {src} has sha256 {got}, expected {spec.sha256}; not added")

    atomic_write(dst, write)
    log.info("added %s as %s", src, dst)
    return dst


def fetch_model(name: str, models_dir: str | os.PathLike[str] | None = None, *, timeout: float = 30.0) -> Path:
    """Download the known model ``name`` from its :attr:`ModelSpec.url` into the models folder.

    The download streams into a temporary file beside the destination while it is hashed; only a file of
    the registered SHA-256 is renamed into place.

    Parameters
    ----------
    name
        A name of :data:`KNOWN_MODELS`.
    models_dir
        Destination folder; default :func:`default_models_dir`.
    timeout
        Seconds to wait for the server to connect or to send more data.

    Raises
    ------
    DownloadError
        When no address is known (the message says where to get the file), or the network or the server
        fails (the message says which, and how to add a file fetched elsewhere).
    ChecksumError
        When the downloaded bytes have another SHA-256; nothing is written.
    """
    spec = get_model_spec(name)
    if not spec.url:
        raise DownloadError(f"model {spec.name}: no download address is known. Get {spec.filename} from "
                            f"{spec.source}; then run: nirvis models add {spec.name} /path/to/{spec.filename}")
    dst = (Path(models_dir).expanduser() if models_dir is not None else default_models_dir()) / spec.filename
    url = spec.url
    elsewhere = f"download it elsewhere and run: nirvis models add {spec.name} /path/to/{spec.filename}"

    def write(tmp: Path) -> None:
        h = hashlib.sha256()
        n = 0
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:  # noqa: S310
            while chunk := resp.read(1 << 20):
                n += len(chunk)
                if n > spec.size_bytes:
                    raise ChecksumError(f"{url}: sent more than the {spec.size_bytes} bytes of {spec.filename}; "
                                        "stopped, not added")
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != spec.sha256:
            raise ChecksumError(f"{url}: the downloaded file has sha256 {h.hexdigest()}, but {spec.name} "
                                f"({spec.filename}) is {spec.sha256}; not added")

    try:
        atomic_write(dst, write)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: the server answered HTTP {exc.code} {exc.reason}; {elsewhere}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url} ({exc.reason}): no network, or the server is down; "
                            f"{elsewhere}") from None
    except (TimeoutError, socket.timeout) as exc:
        raise DownloadError(f"{url}: no answer within {timeout:g} s ({exc}); check the network, or "
                            f"{elsewhere}") from None
    except ConnectionError as exc:
        raise DownloadError(f"{url}: the connection failed ({exc}); {elsewhere}") from None
    log.info("downloaded %s to %s", url, dst)
    return dst


# -- embedders --------------------------------------------------------------------------------------------

def known_embedder(name: str, models_dir: str | os.PathLike[str] | None = None,
                   data_root: str | os.PathLike[str] | None = None, **kwargs: Any) -> OnnxEmbedder:
    """An :class:`~nirvis.features.onnx.OnnxEmbedder` for the known model ``name``, its file found by
    :func:`find_model` and checked; ``keypoints`` overrides the spec's crop (:meth:`ModelSpec.preprocess`), the
    other ``kwargs`` go to ``OnnxEmbedder`` (``batch_size``, ``providers``, ``intra_op_num_threads``, ``flip``).
    The model is loaded on first use."""
    from nirvis.features.onnx import OnnxEmbedder

    spec = get_model_spec(name)
    path = find_model(name, models_dir, data_root)
    return OnnxEmbedder(path, spec.preprocess(kwargs.pop("keypoints", None)), name=spec.name, **kwargs)


def _register_known() -> None:
    for model_name in KNOWN_MODELS:
        def factory(models_dir: str | os.PathLike[str] | None = None, data_root: str | os.PathLike[str] | None = None,
                    _name: str = model_name, **kwargs: Any) -> Embedder:
            return known_embedder(_name, models_dir, data_root, **kwargs)

        factory.__name__ = f"known_embedder[{model_name}]"
        register_embedder(model_name)(factory)


_register_known()


def embedder_from_spec(spec: str, models_dir: str | os.PathLike[str] | None = None,
                       data_root: str | os.PathLike[str] | None = None) -> Embedder:
    """The embedder named by a command line's ``--embedder``.

    Parameters
    ----------
    spec
        ``dlib`` (the default network), ``dlib-noflip`` (the same without its flip pass: one network pass per
        face), a name of :data:`KNOWN_MODELS` (e.g. ``edgeface-xs``), or
        ``onnx:PATH`` for any ONNX face network with ArcFace's conventions (112x112 RGB,
        ``(x - 127.5) / 127.5``). A file given as ``onnx:PATH`` whose SHA-256 is that of a known model is
        that model (same name, preprocessing and licence notice).
    models_dir, data_root
        Where known models are looked for (:func:`search_dirs`).

    Raises
    ------
    ValueError
        For an unknown name (the valid ones are listed) or an ``onnx:`` without a path.
    ModelNotFoundError, ChecksumError, FileNotFoundError
        When the model file is missing or is another file.
    """
    from nirvis.features.base import get_embedder

    if spec.startswith("onnx:"):
        path = Path(spec[len("onnx:"):]).expanduser()
        if not str(path) or path == Path("."):
            raise ValueError("--embedder onnx:PATH needs the model file, e.g. onnx:models/arcface.onnx")
        if not path.is_file():
            raise FileNotFoundError(f"--embedder {spec}: {path}: no such file")
        known = spec_of_file(path)
        from nirvis.features.onnx import OnnxEmbedder, OnnxPreprocess

        if known is not None:
            return OnnxEmbedder(path, known.preprocess(), name=known.name)
        return OnnxEmbedder(path, OnnxPreprocess())
    if spec in KNOWN_MODELS:
        return known_embedder(spec, models_dir, data_root)
    if spec == "onnx":
        raise ValueError("--embedder onnx needs the model file: onnx:PATH")
    if spec in available_embedders():
        return get_embedder(spec)
    choices = ["dlib", "dlib-noflip", *sorted(KNOWN_MODELS), "onnx:PATH"]
    raise ValueError(f"unknown embedder {spec!r}; use one of: {', '.join(choices)}")


def licence_notice(embedder: Embedder) -> str | None:
    """One line saying that ``embedder``'s weights are for research use only, or ``None`` when they are not
    (or are not known to nirvis). Known by the embedder's name, which :func:`embedder_from_spec` sets."""
    spec = KNOWN_MODELS.get(embedder.name)
    if spec is None or not spec.research_only:
        return None
    crop = (" Its faces are aligned with dlib's 68-point landmark model, whose training data (iBUG 300-W) "
            "excludes commercial use too."
            if embedder.landmark_model == "shape68" else "")
    return f"note: {spec.name} ({spec.network}): {spec.licence}; do not use it commercially.{crop}"
