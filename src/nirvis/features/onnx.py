"""Any face network saved as ONNX (ArcFace-style and others), behind the :class:`Embedder` contract.

The model gets its own crop: the aligned 224x224 :class:`~nirvis.faces.types.Face` is warped again, by a
similarity transform that maps three keypoints computed from dlib's 5 landmarks (the two eye centres and
the nose base) onto the positions where the network expects them (:attr:`OnnxPreprocess.template`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nirvis._io import file_digest
from nirvis.faces.align import similarity_transform
from nirvis.faces.types import Face
from nirvis.features.base import Embedder, l2_normalize, register_embedder

__all__ = [
    "ARCFACE_112_TEMPLATE",
    "ARCFACE_DLIB5_TEMPLATE",
    "OnnxEmbedder",
    "OnnxPreprocess",
    "crop_faces",
    "dlib5_keypoints",
    "preprocess_faces",
    "session_threads",
]

log = logging.getLogger(__name__)

Point = tuple[float, float]

#: Where dlib's points fall in ArcFace's 112x112 input, pixels ``(x, y)``: the eye centre on the image's
#: left, the eye centre on the image's right (each the mean of the eye's two corners) and the nose base.
#:
#: ArcFace's own reference (insightface ``arcface_dst``) puts the eyes at (38.2946, 51.6963) and
#: (73.5318, 51.5014) and the nose *tip* at (56.0252, 71.7366). dlib's 5-point model marks the nose
#: *base* (subnasale), about 9 px lower in that crop, so using ArcFace's nose there would shrink and shift
#: the face. These values were measured instead: on 791 CelebA faces, each face was aligned to ArcFace's
#: 5-point template using dlib's 68 landmarks (eye centres, nose tip 30, mouth corners 48 and 54), and
#: dlib's 5 points were averaged in that frame. Re-aligning from dlib's 5 points with this template puts
#: ArcFace's 5 points 3.9 px from their reference on average, against 6.3 px with ArcFace's raw values.
ARCFACE_DLIB5_TEMPLATE: tuple[Point, Point, Point] = ((38.2, 53.2), (73.7, 53.0), (55.8, 80.8))

#: ArcFace's standard 112x112 five-point template (insightface ``norm_crop``), pixels ``(x, y)``: the eye
#: centre on the image's left, the eye centre on the image's right, the nose tip, the mouth corner on the
#: image's left, the mouth corner on the image's right.
ARCFACE_112_TEMPLATE: tuple[Point, Point, Point, Point, Point] = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))


@dataclass(frozen=True)
class OnnxPreprocess:
    """How an aligned face becomes the network's input tensor.

    The face is warped so that its keypoints (:func:`dlib5_keypoints`) land on :attr:`template`, with
    bilinear interpolation and black borders, then each channel is normalised as
    ``(pixel - mean[c]) / std[c]``. The defaults suit ArcFace models (insightface ``w600k_r50`` and the like).

    Attributes
    ----------
    input_size
        ``(width, height)`` of the network input, in pixels.
    mean, std
        Per-channel normalisation, in the order of :attr:`color_order` (``mean[0]`` applies to the first
        channel the network sees). Pixels are in ``[0, 255]``.
    color_order
        ``"RGB"`` or ``"BGR"``: the channel order the network was trained on.
    layout
        ``"NCHW"`` or ``"NHWC"``: the layout of the network's input tensor.
    template
        Three points ``(x, y)`` in input pixels: the image-left eye centre, the image-right eye centre
        and the nose base (dlib's nose point, which sits below the nose tip that 5-point detectors such as
        RetinaFace mark). The default is :data:`ARCFACE_DLIB5_TEMPLATE`, for a 112x112 input; set it
        together with :attr:`input_size` for any other network.
    keypoints
        ``"dlib5"`` (default): the crop maps :func:`dlib5_keypoints` onto :attr:`template`. ``"arcface5"``: it
        maps ArcFace's five keypoints (``face.meta["keypoints5"]``, from faces aligned with
        ``AlignConfig(landmark_model="shape68")``) onto :attr:`template5`, the network's own alignment. A face
        without them (e.g. enrolled as already aligned) falls back to ``"dlib5"``, with a warning.
    template5
        Five points ``(x, y)`` in input pixels, in ArcFace's order (eye, eye, nose tip, mouth corner, mouth
        corner; image-left first): the target of the ``"arcface5"`` crop. Default :data:`ARCFACE_112_TEMPLATE`.
    """

    input_size: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    color_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    template: tuple[Point, Point, Point] = ARCFACE_DLIB5_TEMPLATE
    keypoints: Literal["dlib5", "arcface5"] = "dlib5"
    template5: tuple[Point, Point, Point, Point, Point] = ARCFACE_112_TEMPLATE

    def __post_init__(self) -> None:
        # Validate, and store plain tuples of Python numbers so that the config is hashable and JSON-ready.
        size = tuple(self.input_size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
            raise ValueError(f"OnnxPreprocess.input_size must be two positive ints (width, height), "
                             f"got {self.input_size!r}")
        width, height = int(size[0]), int(size[1])
        object.__setattr__(self, "input_size", (width, height))
        for field_name in ("mean", "std"):
            value = getattr(self, field_name)
            numbers = tuple(float(v) for v in value)
            if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
                raise ValueError(f"OnnxPreprocess.{field_name} must be 3 finite numbers, got {value!r}")
            object.__setattr__(self, field_name, numbers)
        if any(v == 0.0 for v in self.std):
            raise ValueError(f"OnnxPreprocess.std must not contain 0, got {self.std!r}")
        if self.color_order not in ("RGB", "BGR"):
            raise ValueError(f"OnnxPreprocess.color_order must be 'RGB' or 'BGR', got {self.color_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"OnnxPreprocess.layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        self._set_points("template", "3 points (x, y): image-left eye, image-right eye, nose base", 3)
        if self.keypoints not in ("dlib5", "arcface5"):
            raise ValueError(f"OnnxPreprocess.keypoints must be 'dlib5' or 'arcface5', got {self.keypoints!r}")
        self._set_points("template5", "5 points (x, y) in ArcFace's order", 5)

    def _set_points(self, field_name: str, what: str, n: int) -> None:
        """Check a template (``n`` finite points inside the input, the image-left eye first) and store it as
        plain tuples."""
        width, height = self.input_size
        value = getattr(self, field_name)
        points = np.asarray(value, dtype=np.float64)
        if points.shape != (n, 2) or not np.isfinite(points).all():
            raise ValueError(f"OnnxPreprocess.{field_name} must be {what}; got {value!r}")
        if (points < 0).any() or (points[:, 0] >= width).any() or (points[:, 1] >= height).any():
            raise ValueError(f"OnnxPreprocess.{field_name} {value!r} has points outside the "
                             f"{width}x{height} input; give the template in input pixels")
        if points[0, 0] >= points[1, 0]:
            raise ValueError(f"OnnxPreprocess.{field_name} {value!r}: the first point (image-left eye) "
                             "must have a smaller x than the second (image-right eye)")
        object.__setattr__(self, field_name, tuple((float(x), float(y)) for x, y in points))


def dlib5_keypoints(landmarks: np.ndarray) -> np.ndarray:
    """The three alignment keypoints of dlib's 5 landmarks.

    Parameters
    ----------
    landmarks
        ``(5, 2)`` points in dlib's 5-point order: two corners of one eye, two corners of the other eye,
        nose base (:data:`~nirvis.faces.types.LANDMARK_NAMES_5`).

    Returns
    -------
    numpy.ndarray
        ``(3, 2)`` float64: the image-left eye centre, the image-right eye centre, the nose base. Each eye
        centre is the mean of its two corners; which eye is on the image's left is decided by x, not by
        dlib's naming.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"landmarks must be a finite (5, 2) array in dlib's 5-point order, "
                         f"got shape {points.shape}")
    eyes = points[:4].reshape(2, 2, 2).mean(axis=1)
    eyes = eyes[np.argsort(eyes[:, 0], kind="stable")]
    return np.vstack([eyes, points[4:5]])


def crop_faces(faces: Sequence[Face], preprocess: OnnxPreprocess) -> list[np.ndarray]:
    """Each face warped to the network's template (similarity transform of its 5 landmarks): ``(height, width,
    3)`` uint8 RGB, what the network sees before its normalisation. Gray (NIR) faces are replicated to 3
    channels (:meth:`Face.rgb`)."""
    import cv2

    width, height = preprocess.input_size
    template = np.asarray(preprocess.template, dtype=np.float64)
    template5 = np.asarray(preprocess.template5, dtype=np.float64)
    out = []
    for i, face in enumerate(faces):
        try:
            if preprocess.keypoints == "arcface5" and "keypoints5" in face.meta:
                matrix = similarity_transform(np.asarray(face.meta["keypoints5"], np.float64), template5)
            else:
                if preprocess.keypoints == "arcface5":
                    _warn_no_keypoints(face)
                matrix = similarity_transform(dlib5_keypoints(face.landmarks), template)
        except ValueError as exc:
            raise ValueError(f"face {i} (source {face.source!r}): {exc}") from exc
        out.append(cv2.warpAffine(np.ascontiguousarray(face.rgb()), matrix, (width, height),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0))
    return out


_WARNED_NO_KEYPOINTS = False


def _warn_no_keypoints(face: Face) -> None:
    global _WARNED_NO_KEYPOINTS
    if not _WARNED_NO_KEYPOINTS:
        _WARNED_NO_KEYPOINTS = True
        log.warning("%s: this face has no ArcFace keypoints (it was not aligned with landmark_model='shape68'); it "
                    "is cut from dlib's 5 points instead, a slightly different crop (warned once)",
                    face.source or "a face")


def preprocess_faces(faces: Sequence[Face], preprocess: OnnxPreprocess) -> np.ndarray:
    """The network input for ``faces``: :func:`crop_faces`, then colour order, normalisation and layout.

    Returns
    -------
    numpy.ndarray
        float32, ``(n, 3, height, width)`` for ``"NCHW"`` or ``(n, height, width, 3)`` for ``"NHWC"``.
    """
    width, height = preprocess.input_size
    mean = np.asarray(preprocess.mean, dtype=np.float32)
    scale = 1.0 / np.asarray(preprocess.std, dtype=np.float32)
    batch = np.empty((len(faces), height, width, 3), dtype=np.float32)
    for i, crop in enumerate(crop_faces(faces, preprocess)):
        if preprocess.color_order == "BGR":
            crop = crop[:, :, ::-1]
        batch[i] = (crop.astype(np.float32) - mean) * scale
    if preprocess.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch)


@register_embedder("onnx")
class OnnxEmbedder(Embedder):
    """A user's face network in an ONNX file, run with ONNX Runtime.

    The model must have exactly one input, a 4-D image batch matching ``preprocess`` (3 channels,
    ``input_size``), and its first output must be 2-D ``(batch, dim)``; other outputs are ignored. A
    dynamic batch dimension is filled ``batch_size`` faces at a time; a fixed one (often 1) is filled
    exactly, padding the last chunk.

    The constructor only checks that the file exists. The file is hashed, the ONNX Runtime session
    created and the model's inputs and outputs validated on first use (:attr:`dim`, :meth:`config`,
    :attr:`fingerprint`, :meth:`embed`), or when :meth:`load` is called; call :meth:`load` to fail early.

    Sessions are shared: one per model file, providers and thread count in each process. An embedder sent
    to a worker process (pickled, as :meth:`Recognizer.featurize` does with every chunk of work) carries its
    validated model description but no session; it reuses that process's session, without hashing the file
    again, as long as the file's size and modification time are unchanged.

    Parameters
    ----------
    model_path
        The ``.onnx`` file. Weights stored as ONNX external data beside it are loaded but not hashed.
    preprocess
        How faces become the model's input; ArcFace's conventions by default.
    name
        Name of the features, the prefix of :attr:`fingerprint`; ``"onnx-<file stem>"`` by default.
    providers
        ONNX Runtime execution providers, in order of preference.
    batch_size
        Faces per inference call when the model's batch dimension is dynamic.
    intra_op_num_threads
        ONNX Runtime's threads per inference call. ``None`` (default): :func:`session_threads`, i.e. 1 in a
        worker process (the processes are the parallelism; more threads would oversubscribe the cores) and
        the CPUs this process may use otherwise. It does not change the features beyond float rounding, so
        it is not part of :attr:`fingerprint`.
    flip
        Also embed each face mirrored left-right and add the two outputs before normalising (test-time
        augmentation, as :class:`~nirvis.features.dlib_resnet.DlibResNetEmbedder` does by default). Twice the
        network time.

    Raises
    ------
    FileNotFoundError
        When ``model_path`` is not a file.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        preprocess: OnnxPreprocess | None = None,
        name: str | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        batch_size: int = 32,
        intra_op_num_threads: int | None = None,
        flip: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {self.model_path}")
        if isinstance(providers, str):
            providers = (providers,)
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if intra_op_num_threads is not None and (
                not isinstance(intra_op_num_threads, (int, np.integer)) or isinstance(intra_op_num_threads, bool)
                or intra_op_num_threads < 1):
            raise ValueError(f"intra_op_num_threads must be a positive int or None (automatic), "
                             f"got {intra_op_num_threads!r}")
        self.preprocess = preprocess if preprocess is not None else OnnxPreprocess()
        self.name = name if name is not None else f"onnx-{self.model_path.stem}"
        self.providers = tuple(providers)
        self.batch_size = int(batch_size)
        self.intra_op_num_threads = None if intra_op_num_threads is None else int(intra_op_num_threads)
        if not isinstance(flip, (bool, np.bool_)):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        self.flip = bool(flip)
        self._session: Any = None
        self._file_stat: tuple[int, int] = (0, 0)  # (size, mtime_ns) of the file when it was validated
        self._sha256 = ""
        self._input_name = ""
        self._input_dtype: type[np.floating[Any]] = np.float32
        self._output_name = ""
        self._fixed_batch: int | None = None
        self._dim = 0

    # ``dim`` is a property here (the base class has a plain attribute) so that reading it loads the model.
    @property
    def dim(self) -> int:  # type: ignore[override]
        """Length of the feature vector, read from the model's output (loads the model)."""
        self.load()
        return self._dim

    def load(self) -> OnnxEmbedder:
        """Hash the model file, open an ONNX Runtime session and validate the model; once only.

        Returns
        -------
        OnnxEmbedder
            ``self``.

        Raises
        ------
        ValueError
            When ONNX Runtime cannot load the file, or the model's inputs or outputs do not fit
            (not exactly one input, input not a 4-D float image batch matching :attr:`preprocess`,
            first output not 2-D). The message names the model file and what was found.
        """
        if self._session is not None:
            return self
        path = self.model_path
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {path}")
        stat = _file_stat(path)
        if self._sha256:  # validated before (in the process that pickled this embedder): reopen
            if stat != self._file_stat:
                raise ValueError(f"ONNX model {path} changed on disk since it was loaded (size, modification "
                                 "time); its features would not match the fingerprint. Build the embedder again")
            self._session = _shared_session(path, stat, self._sha256, self.providers, self.threads)
            return self
        digest = file_digest(path)[:16]
        session = _shared_session(path, stat, digest, self.providers, self.threads)

        inputs = session.get_inputs()
        if len(inputs) != 1:
            found = ", ".join(f"{i.name} {i.shape}" for i in inputs) or "none"
            raise ValueError(f"ONNX model {path} must have exactly one input (the image batch), "
                             f"found {len(inputs)}: {found}")
        inp = inputs[0]
        dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
        if inp.type not in dtypes:
            raise ValueError(f"ONNX model {path}: input {inp.name!r} must be float or float16, found {inp.type}")
        self._check_input_shape(list(inp.shape))
        outputs = session.get_outputs()
        if not outputs:
            raise ValueError(f"ONNX model {path} has no outputs")
        out = outputs[0]
        if len(out.shape) != 2:
            raise ValueError(f"ONNX model {path}: output {out.name!r} must be 2-D (batch, dim), "
                             f"found shape {out.shape}")

        self._input_name = inp.name
        self._input_dtype = dtypes[inp.type]
        self._output_name = out.name
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self._sha256 = digest
        self._file_stat = stat
        self._session = session
        if isinstance(out.shape[1], int) and out.shape[1] > 0:
            self._dim = out.shape[1]
        else:  # Symbolic feature dimension: run one blank input to read it.
            width, height = self.preprocess.input_size
            shape = (1, 3, height, width) if self.preprocess.layout == "NCHW" else (1, height, width, 3)
            self._dim = int(self._run(np.zeros(shape, dtype=np.float32)).shape[1])
        return self

    @property
    def threads(self) -> int:
        """ONNX Runtime's intra-op threads of this embedder's session (see ``intra_op_num_threads``)."""
        return self.intra_op_num_threads if self.intra_op_num_threads is not None else session_threads()

    def __getstate__(self) -> dict[str, Any]:
        # An ONNX Runtime session cannot be pickled; the receiving process opens (or reuses) its own.
        return {**self.__dict__, "_session": None}

    def config(self) -> dict[str, Any]:
        """Model digest (first 16 hex digits of the file's SHA-256), input and output names, preprocessing."""
        self.load()
        return {
            "model_sha256": self._sha256,
            "input": self._input_name,
            "output": self._output_name,
            "preprocess": _preprocess_record(self.preprocess),
            **({"flip": True} if self.flip else {}),  # without it, the fingerprint of earlier features stands
        }

    @property
    def landmark_model(self) -> str:  # type: ignore[override]
        """``"shape68"`` when the crop is cut from ArcFace's keypoints (``preprocess.keypoints == "arcface5"``),
        else ``"shape5"``."""
        return "shape68" if self.preprocess.keypoints == "arcface5" else "shape5"

    def crops(self, faces: Sequence[Face]) -> list[np.ndarray]:
        """The faces warped to the network's template (:func:`crop_faces`): what it sees."""
        return crop_faces(faces, self.preprocess)

    def embed(self, faces: Sequence[Face]) -> np.ndarray:
        """Features of ``faces``, shape ``(n, dim)``, float32, each row of unit L2 norm."""
        self.load()
        faces = list(faces)
        if not faces:
            return np.zeros((0, self._dim), dtype=np.float32)
        step = self._fixed_batch or self.batch_size
        chunks = []
        width_axis = 3 if self.preprocess.layout == "NCHW" else 2
        for start in range(0, len(faces), step):
            batch = preprocess_faces(faces[start:start + step], self.preprocess)
            out = self._run(batch)
            if self.flip:
                out = out + self._run(np.ascontiguousarray(np.flip(batch, axis=width_axis)))
            chunks.append(out)
        return l2_normalize(np.concatenate(chunks, axis=0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_path={str(self.model_path)!r}, name={self.name!r})"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self._fixed_batch is not None and n < self._fixed_batch:
            pad = np.zeros((self._fixed_batch - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        out = self._session.run([self._output_name], {self._input_name: batch.astype(self._input_dtype)})[0]
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ValueError(f"ONNX model {self.model_path}: output {self._output_name!r} has shape {out.shape} "
                             f"for a batch of {len(batch)}; expected ({len(batch)}, dim)")
        return out[:n]

    def _check_input_shape(self, shape: list[Any]) -> None:
        width, height = self.preprocess.input_size
        layout = self.preprocess.layout
        expected = [None, 3, height, width] if layout == "NCHW" else [None, height, width, 3]
        names = ["N", "C", "H", "W"] if layout == "NCHW" else ["N", "H", "W", "C"]
        if len(shape) != 4 or any(
            isinstance(got, int) and got > 0 and want is not None and got != want
            for got, want in zip(shape, expected)
        ):
            want_text = "x".join(n if w is None else str(w) for n, w in zip(names, expected))
            raise ValueError(f"ONNX model {self.model_path}: input shape {shape} does not match the preprocessing "
                             f"({layout}, input_size {width}x{height}, expecting {want_text}); "
                             "set OnnxPreprocess.layout and input_size to the model's")


def _preprocess_record(preprocess: OnnxPreprocess) -> dict[str, Any]:
    """The preprocessing as it enters the fingerprint; the ``dlib5`` default leaves out the keypoint fields, so
    that the fingerprint of features made before they existed stands."""
    record = asdict(preprocess)
    if record["keypoints"] == "dlib5":
        del record["keypoints"], record["template5"]
    return record


def session_threads() -> int:
    """Intra-op threads for a session opened now: 1 in a worker process (``multiprocessing``'s children, e.g.
    :meth:`Recognizer.featurize`'s workers), else the number of CPUs this process may run on."""
    if multiprocessing.parent_process() is not None:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _file_stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


#: This process's ONNX Runtime sessions, by (file, size, mtime, digest, providers, threads). Sessions are
#: thread-safe for ``run``; sharing one spares loading the model again for every chunk a worker receives.
_SESSIONS: dict[tuple[str, int, int, str, tuple[str, ...], int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _shared_session(path: Path, stat: tuple[int, int], digest: str, providers: Sequence[str],
                    threads: int) -> Any:
    """The process's session for ``path`` with these settings, created on first request."""
    key = (str(path.resolve()), *stat, digest, tuple(providers), int(threads))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1  # one operator at a time: the batch is the parallel work
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # Threads sleep between calls instead of spinning: on a machine shared with other jobs, spinning
            # threads made 2 threads twice as slow as 1 (EdgeFace-XS, 9.4 against 4.8 ms/face; without
            # spinning 4.6 ms/face; docs/BENCHMARKS.md).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
            except _ort_errors() as exc:
                raise ValueError(f"ONNX model {path}: ONNX Runtime cannot load it: {exc}") from exc
            _SESSIONS[key] = session
        return session


def _ort_errors() -> tuple[type[BaseException], ...]:
    """The exception types ONNX Runtime raises for a model it cannot load (they do not share a base class)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented",
             "RuntimeException")
    return tuple(t for t in (getattr(state, n, None) for n in names) if isinstance(t, type)) + (RuntimeError,)
