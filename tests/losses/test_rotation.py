"""The rotation heads: labels match the rotations applied; the rotation head's loss is SESEMI's rotation
cross-entropy, the joint head's is SLA's cross-entropy over (class, rotation) pairs."""

import torch
import torch.nn.functional as F
from torch import nn

from sesemi.losses import JointRotationHead, RotationHead, StepContext, rotate_batch


def test_rotation_labels_match_rotations():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    images = image.repeat(4, 1, 1, 1)
    rotated = rotate_batch(images, torch.tensor([0, 1, 2, 3]))
    for k in range(4):
        assert torch.equal(rotated[k], torch.rot90(image[0], k, dims=(-2, -1)))


def _head_and_context(all_rotations: bool) -> tuple[RotationHead, StepContext, torch.Tensor]:
    torch.manual_seed(0)
    labeled, unlabeled = torch.randn(3, 1, 6, 6), torch.randn(5, 1, 6, 6)
    head = RotationHead(all_rotations=all_rotations)
    head.build(in_features=36, num_classes=10)
    batch = {"labeled": {"weak": labeled}, "unlabeled": {"weak": unlabeled}}
    ctx = StepContext(batch, nn.Flatten(), nn.Identity(), 0, list(head.views))
    return head, ctx, torch.cat([labeled, unlabeled])


def test_all_rotations_loss_is_the_mean_cross_entropy_over_every_image_and_rotation():
    head, ctx, images = _head_and_context(all_rotations=True)
    expected = torch.stack(
        [
            F.cross_entropy(head.classifier(torch.rot90(image, k, dims=(-2, -1)).flatten()), torch.tensor(k))
            for k in range(4)
            for image in images
        ]
    ).mean()
    torch.testing.assert_close(head(ctx), expected)


def test_one_rotation_per_image_scores_the_rotation_it_drew():
    head, ctx, images = _head_and_context(all_rotations=False)
    torch.manual_seed(1)
    loss = head(ctx)
    torch.manual_seed(1)
    labels = torch.randint(0, 4, (len(images),))
    rotated = torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(images, labels)])
    torch.testing.assert_close(loss, F.cross_entropy(head.classifier(rotated.flatten(1)), labels))


def test_joint_rotation_loss_is_the_cross_entropy_over_class_rotation_pairs_of_every_labeled_image():
    torch.manual_seed(0)
    labeled, targets = torch.randn(3, 1, 6, 6), torch.tensor([2, 0, 9])
    head = JointRotationHead()
    head.build(in_features=36, num_classes=10)
    batch = {"labeled": {"weak": labeled, "target": targets}, "unlabeled": {"weak": torch.randn(5, 1, 6, 6)}}
    ctx = StepContext(batch, nn.Flatten(), nn.Identity(), 0, [])
    expected = torch.stack(
        [
            F.cross_entropy(head.classifier(torch.rot90(image, k, dims=(-2, -1)).flatten()), 4 * target + k)
            for k in range(4)
            for image, target in zip(labeled, targets)
        ]
    ).mean()
    assert head.classifier.out_features == 40  # one output per (class, rotation)
    torch.testing.assert_close(head(ctx), expected)
