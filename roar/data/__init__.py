from roar.data.datamodule import Split, TensorDataModule
from roar.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule", "Split", "TensorDataModule"]
