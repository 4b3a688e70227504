"""dcf: Direct Covariant Forces and Behler-Parrinello neural network force fields."""
from dcf.fingerprints import Featurizer, Features, featurize
from dcf.modelfile import load_model
from dcf.neighbors import neighbor_list
from dcf.spec import FingerprintSpec, SpecError

__version__ = "0.1.0"
__all__ = ["FingerprintSpec", "SpecError", "Featurizer", "Features", "featurize",
           "neighbor_list", "load_model"]
