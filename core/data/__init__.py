"""Evaluation and calibration data: read an .npz file or a folder of images, preprocess, fit a model."""

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.fit import fit_to_model, model_input
from slimscope.core.data.image_folder import IMAGE_SUFFIXES
from slimscope.core.data.preprocess import PreprocessSpec
from slimscope.core.data.readers import READERS, SUFFIX_KINDS, data_kind, iter_load_dataset, load_dataset

__all__ = [
    "IMAGE_SUFFIXES",
    "READERS",
    "SUFFIX_KINDS",
    "Dataset",
    "PreprocessSpec",
    "data_kind",
    "fit_to_model",
    "iter_load_dataset",
    "load_dataset",
    "model_input",
]
