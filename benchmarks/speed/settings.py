"""The size of a full and of a --quick speed run, and its experiments."""

#: Sizes of a full and of a --quick run.
PROFILES = {
    'full': dict(
        dims=(192, 384, 768, 1536),  # ConvNeXt-V2-L stage widths
        image=160,                   # feature maps of a 160 px image, batch 2, for the layers
        batch=2, layer_reps=5, layer_warmup=1,
        # auto against the fixed paths: at least 21 repetitions, more for a fast case (until
        # it has run 0.5 s, at most 201): millisecond layers rest on more than a few steps
        path_reps=21, path_seconds=0.5, path_max_reps=201,
        backbone='convnextv2_tiny', backbone_px=128, backbone_reps=9, backbone_warmup=1,
        infer_reps=15, infer_warmup=2,
        storage_model='convnextv2_large',
        # One thread on CPU: the timer is then the thread's CPU time, which other jobs on a
        # shared machine barely disturb (see harness.clock); pass --threads to use more.
        threads=1),
    'quick': dict(
        dims=(8, 16), image=32, batch=2, layer_reps=1, layer_warmup=0,
        path_reps=2, path_seconds=0.0, path_max_reps=2,
        backbone='convnextv2_atto', backbone_px=32, backbone_reps=1, backbone_warmup=0,
        infer_reps=1, infer_warmup=0, storage_model='convnextv2_atto', threads=1),
}

#: The experiments, in the order they run and are reported.
SECTIONS = ('layers', 'paths', 'backbone', 'breakdown', 'inference', 'storage')

#: The sections that compare at FLoRA ranks matched to LoRA's budget on the backbone.
MATCHED_SECTIONS = ('backbone', 'breakdown', 'inference')
