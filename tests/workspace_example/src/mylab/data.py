from sesemi.datasets import Digits


class ThreeDigits(Digits):
    """The embedded digits, classes 0-2 only."""

    def __init__(self, root=None, split="train"):
        super().__init__(root, split)
        keep = [i for i, t in enumerate(self.targets) if t < 3]
        self.images = self.images[keep]
        self.targets = [self.targets[i] for i in keep]
        self.classes = ["zero", "one", "two"]
