# Table 1 baseline LoRA, r = 16, on the same conv and pointwise layers as FLoRA, the
# convs in loralib's ConvLoRA form (A (r*k, in*k), B (out/groups*k, r*k); alpha = r,
# scaling 1), the form whose counts are Table 1's LoRA rows. It folds into the depthwise
# kernels, hence mode='structured'.
# #Params 25.892M; Table 1: 25.89M.
_base_ = '../flora/oriented_rcnn_convnextv2_l_dota.py'

model = dict(
    backbone=dict(
        adapter=dict(
            _delete_=True, method='lora', r=16, pointwise=True, mode='structured',
            lora_conv_form='loralib')))
