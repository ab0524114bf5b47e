"""RoPE geometry: per-method frequencies, angle histograms, disturbance, the DPRoPE solver, and
conversion to and from transformers ``rope_parameters``. Pure numpy, except that the frequencies a
stock model runs are taken from transformers' own RoPE init functions (imported lazily)."""

from ropeext.rope.angles import angle_histograms
from ropeext.rope.disturbance import per_pair_disturbance
from ropeext.rope.geometry import Geometry, make_geometry
from ropeext.rope.methods import METHODS
from ropeext.rope.solve import compare, compare_solutions, solve

__all__ = ["Geometry", "METHODS", "angle_histograms", "compare", "compare_solutions", "make_geometry",
           "per_pair_disturbance", "solve"]
