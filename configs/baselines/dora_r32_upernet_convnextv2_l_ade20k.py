# Table 1 baseline DoRA, r = 32, on the same conv and pointwise layers as FLoRA, the
# convs in loralib's ConvLoRA form (A (r*k, in*k), B (out/groups*k, r*k); alpha = r,
# scaling 1), the form whose counts are Table 1's LoRA rows. It folds into the depthwise
# kernels, hence mode='structured'.
# #Params 51.950M (LoRA's + one magnitude per output channel).
_base_ = '../flora/upernet_convnextv2_l_ade20k.py'

model = dict(
    backbone=dict(
        adapter=dict(
            _delete_=True, method='dora', r=32, pointwise=True, mode='structured',
            lora_conv_form='loralib')))
