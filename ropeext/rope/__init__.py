"""RoPE geometry: per-method frequencies (the methods are named in ``registry``), angle histograms,
disturbance, the DPRoPE solver, and conversion to and from transformers ``rope_parameters``."""
