"""Vector systems, the class <-> center mapping and label predictors (no n_classes-sized state anywhere)."""

from .class_centers import METHODS, ClassCenters
from .label_map import FeistelPermutation, IdentityPermutation
from .orbit import Orbit
from .sizes import n_min
from .systems import (
    SYSTEM_NAMES,
    OrbitSystem,
    PositiveRootSystem,
    TableSystem,
    VectorSystem,
    check_embeddings,
    make_system,
    system_from_spec,
)

__all__ = [
    "METHODS",
    "SYSTEM_NAMES",
    "ClassCenters",
    "FeistelPermutation",
    "IdentityPermutation",
    "Orbit",
    "OrbitSystem",
    "PositiveRootSystem",
    "TableSystem",
    "VectorSystem",
    "check_embeddings",
    "make_system",
    "n_min",
    "system_from_spec",
]
