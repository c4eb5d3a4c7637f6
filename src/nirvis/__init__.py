"""nirvis: cross-spectral (NIR-VIS) face recognition.

Stages of the method (Lezama, Qiu & Sapiro, CVPR 2017), one subpackage each:

- :mod:`nirvis.datasets`   -- samples and protocols (RAP3DF, CASIA NIR-VIS 2.0, folders)
- :mod:`nirvis.faces`      -- detection, landmarks, alignment to the 224x224 template (Sec. 3.1)
- :mod:`nirvis.features`   -- frozen VIS face embedders (dlib ResNet, ONNX models)
- :mod:`nirvis.embedding`  -- low-rank embedding (Sec. 4) and metric-learning baselines
- :mod:`nirvis.evaluation` -- rank-k / CMC, ROC, VR@FAR and the evaluation protocols (Sec. 5)

Nothing heavy is imported here, so ``import nirvis`` and ``nirvis --help`` stay fast.
"""

__version__ = "0.1.0"
