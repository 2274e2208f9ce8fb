"""Datasets: readers for the common formats, a parse cache, and the dataset profile."""

from virtualmle.data.dataset import DATASET_FILES, SequenceData, data_dir, load_dataset

__all__ = ["DATASET_FILES", "SequenceData", "data_dir", "load_dataset"]
