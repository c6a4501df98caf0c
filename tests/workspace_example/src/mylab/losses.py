from sesemi.losses import LossHead, StepContext


class FeatureNormHead(LossHead):
    """A loss head reads views from the step context and returns a scalar; it may log what it wants."""

    views = (("labeled", "weak"),)

    def forward(self, ctx: StepContext):
        norm = ctx.features("labeled", "weak").norm(dim=1).mean()
        ctx.log("mean", norm)
        return (norm - 1.0) ** 2
