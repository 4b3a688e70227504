"""What DCF and B–P training share: thread limits (and, as it grows, the rest of the loop).

TensorFlow is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations


def set_threads(threads: int | None) -> None:
    """Limit TensorFlow's thread pools (only possible before TensorFlow starts computing)."""
    import tensorflow as tf
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:        # TensorFlow already computing: keep its setting
            return
