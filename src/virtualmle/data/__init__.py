"""Datasets: readers for the common formats, a parse cache, and the dataset profile."""

from virtualmle.data.dataset import DATASET_FILES, SequenceData, data_dir, load_dataset, resolve_dataset, slice_data
from virtualmle.data.profile import describe_profile, profile_dataset
from virtualmle.data.readers import FORMATS, detect_format

__all__ = [
    "DATASET_FILES",
    "FORMATS",
    "SequenceData",
    "data_dir",
    "describe_profile",
    "detect_format",
    "load_dataset",
    "profile_dataset",
    "resolve_dataset",
    "slice_data",
]
