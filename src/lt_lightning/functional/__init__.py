"""Pure tensor maths of lt_lightning: losses and per-class weights (no state, no Lightning import)."""

from lt_lightning.functional.losses import (
    Reduction,
    check_reduction,
    cross_entropy,
    focal_loss,
    ldam_loss,
    logit_adjusted_loss,
    mm_loss,
    mm_margins,
    sigmoid_bias_init,
    sigmoid_focal_loss,
    vs_loss,
)
from lt_lightning.functional.munit import (
    adaptive_instance_norm,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    munit_layer_norm,
    recon_l1,
)
from lt_lightning.functional.open_sampling import (
    complementary_distribution,
    complementary_weights,
    open_sampling_ood_loss,
    sample_complementary_labels,
)
from lt_lightning.functional.weights import (
    ClassCounts,
    check_class_counts,
    effective_number_weights,
    inverse_frequency_weights,
    ldam_margins,
    log_priors,
    reversed_probabilities,
    vs_scaling,
)

__all__ = [
    "adaptive_instance_norm",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "munit_layer_norm",
    "recon_l1",
    "ClassCounts",
    "Reduction",
    "check_class_counts",
    "check_reduction",
    "complementary_distribution",
    "complementary_weights",
    "cross_entropy",
    "effective_number_weights",
    "focal_loss",
    "inverse_frequency_weights",
    "ldam_loss",
    "ldam_margins",
    "log_priors",
    "logit_adjusted_loss",
    "mm_loss",
    "mm_margins",
    "open_sampling_ood_loss",
    "reversed_probabilities",
    "sample_complementary_labels",
    "sigmoid_bias_init",
    "sigmoid_focal_loss",
    "vs_loss",
    "vs_scaling",
]
