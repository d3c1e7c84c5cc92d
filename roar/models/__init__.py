from roar.models.averaging import WarmEMA
from roar.models.cifar import resnet18_cifar, vgg_bn_cifar
from roar.models.classifier import ImageClassifier
from roar.models.fast_cifar import FastCifarNet
from roar.models.schedules import triangular
from roar.models.small_cnn import SmallCNN
from roar.models.zoo import timm_classifier, timm_net, torchvision_classifier, torchvision_net

__all__ = [
    "FastCifarNet",
    "WarmEMA",
    "triangular",
    "ImageClassifier",
    "SmallCNN",
    "resnet18_cifar",
    "timm_classifier",
    "timm_net",
    "torchvision_classifier",
    "torchvision_net",
    "vgg_bn_cifar",
]
