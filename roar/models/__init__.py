from roar.models.classifier import ImageClassifier
from roar.models.small_cnn import SmallCNN

__all__ = ["ImageClassifier", "SmallCNN"]
