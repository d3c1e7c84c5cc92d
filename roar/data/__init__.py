from roar.data.datamodule import Split, TensorDataModule
from roar.data.digits import DigitsDataModule
from roar.data.synthetic import SyntheticDataModule

__all__ = ["DigitsDataModule", "Split", "SyntheticDataModule", "TensorDataModule"]
