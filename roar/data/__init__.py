from roar.data.augment import RandomCropFlip
from roar.data.datamodule import Split, TensorDataModule
from roar.data.digits import DigitsDataModule
from roar.data.synthetic import SyntheticDataModule
from roar.data.vision import VisionDataModule

__all__ = [
    "DigitsDataModule",
    "RandomCropFlip",
    "Split",
    "SyntheticDataModule",
    "TensorDataModule",
    "VisionDataModule",
]
