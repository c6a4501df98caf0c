"""Built-in datasets. Each returns ``(PIL image, int target)`` samples (target -1 when unlabeled) and has
``targets`` and ``classes`` attributes; paths are resolved from ``run.data_root`` by the configs."""

from sesemi.datasets.cifar import CIFAR10, CIFAR100
from sesemi.datasets.digits import Digits
from sesemi.datasets.errors import DatasetNotFoundError
from sesemi.datasets.folder import ImageFolder, UnlabeledImages
from sesemi.datasets.idx import MNIST, FashionMNIST
from sesemi.datasets.stl10 import STL10
from sesemi.datasets.svhn import SVHN

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "MNIST",
    "STL10",
    "SVHN",
    "DatasetNotFoundError",
    "Digits",
    "FashionMNIST",
    "ImageFolder",
    "UnlabeledImages",
]
