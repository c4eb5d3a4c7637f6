"""Embeddings of deep features (paper Sec. 4): the low-rank transform and its baselines.

Every embedding is a scikit-learn transformer that learns one linear map from labelled feature
vectors (a person's NIR and VIS vectors share one label) and is compared with the cosine
similarity::

    from nirvis.embedding import make_embedding, save_embedding, load_embedding

    emb = make_embedding("lowrank").fit(X_train, person_ids, modality=modalities)   # "nir" / "vis" per row
    save_embedding(emb, "runs/lowrank", embedder_fingerprint=embedder.fingerprint)
    emb = load_embedding("runs/lowrank")                      # LinearEmbedding
    Z = emb.transform(X, fingerprint=embedder.fingerprint, modality="nir")  # refuses another embedder's features

=========== ======================================================= ==========================
name        estimator                                               learns
=========== ======================================================= ==========================
``none``    :class:`IdentityEmbedding`                              nothing (plain cosine)
``ms``      :class:`ModalityShift`                                  the NIR and VIS means
``pca``     :class:`PCAEmbedding`                                   PCA
``lowrank`` :class:`LowRankTransformCV`                             PCA + ``T`` (Sec. 4.1), settings
                                                                    chosen on held-out training people
``lowrank-fixed`` :class:`LowRankTransform`                         PCA + ``T`` with given settings
``itml``    :class:`ITMLEmbedding`                                  PCA + ITML (pairwise)
``lmnn``    :class:`LMNNEmbedding`                                  PCA + LMNN (triplets)
=========== ======================================================= ==========================

Nothing heavy is imported here beyond numpy and scikit-learn; metric-learn is imported when an
ITML or LMNN embedding is fitted.
"""

from __future__ import annotations

from nirvis.embedding.base import LinearEmbeddingMixin
from nirvis.embedding.baselines import IdentityEmbedding, ITMLEmbedding, LMNNEmbedding, ModalityShift, PCAEmbedding
from nirvis.embedding.io import LinearEmbedding, load_embedding, save_embedding
from nirvis.embedding.lowrank import LowRankTransform, LowRankTransformCV, lowrank_objective, lowrank_subgradient, retrieval_scores
from nirvis.embedding.registry import EMBEDDINGS, available_embeddings, make_embedding, method_name

__all__ = [
    "EMBEDDINGS",
    "IdentityEmbedding",
    "ITMLEmbedding",
    "LMNNEmbedding",
    "LinearEmbedding",
    "LinearEmbeddingMixin",
    "LowRankTransform",
    "LowRankTransformCV",
    "ModalityShift",
    "PCAEmbedding",
    "available_embeddings",
    "load_embedding",
    "lowrank_objective",
    "lowrank_subgradient",
    "make_embedding",
    "method_name",
    "retrieval_scores",
    "save_embedding",
]
