"""Saliency methods behind one interface: `create(method, model, **params).pixel_maps(images, targets)`,
`method` a name from roar/conf/method/, a config with `_target_`, a class, a function or an attribution
(roar/saliency/methods.py)."""

from __future__ import annotations

from roar.saliency.base import REDUCTIONS, ContractError, PixelSaliency, check_attributions
from roar.saliency.cam import GradCam, GradCamPlusPlus, GuidedGradCam, LayerGradCamPlusPlus
from roar.saliency.decomposition import FullGradientTerms, full_gradient_terms
from roar.saliency.fullgrad import FullGrad, SimpleFullGrad, SmoothFullGrad
from roar.saliency.integrated_gradients import IntegratedGradients
from roar.saliency.lrp import LRP
from roar.saliency.methods import (
    FunctionAttribution,
    available,
    check_params,
    create,
    named_config,
    source_hash,
)
from roar.saliency.noise import NoiseEnsemble, NoisyGradients, SmoothGrad, SmoothGradSquared, VarGrad
from roar.saliency.oracle import Oracle
from roar.saliency.perturbation import FeatureAblation, KernelShap, Lime, Occlusion, ShapleyValueSampling
from roar.saliency.random import RandomSaliency
from roar.saliency.reference import DeepLift, DeepLiftShap, GradientShap
from roar.saliency.sobel import Sobel

__all__ = [
    "REDUCTIONS",
    "ContractError",
    "DeepLift",
    "DeepLiftShap",
    "FeatureAblation",
    "FullGrad",
    "FunctionAttribution",
    "FullGradientTerms",
    "GradCam",
    "GradCamPlusPlus",
    "GradientShap",
    "GuidedGradCam",
    "IntegratedGradients",
    "KernelShap",
    "LRP",
    "LayerGradCamPlusPlus",
    "Lime",
    "NoiseEnsemble",
    "NoisyGradients",
    "Occlusion",
    "Oracle",
    "PixelSaliency",
    "RandomSaliency",
    "ShapleyValueSampling",
    "SimpleFullGrad",
    "SmoothFullGrad",
    "SmoothGrad",
    "SmoothGradSquared",
    "Sobel",
    "VarGrad",
    "available",
    "check_attributions",
    "check_params",
    "create",
    "named_config",
    "source_hash",
    "full_gradient_terms",
]
