# The demo's LoRA column: r = 2 in loralib's ConvLoRA form (as Table 1's LoRA rows and the
# transfer benchmark), on every conv and pointwise layer of the frozen pretrained trunk:
# 6.7% of atto's trunk, the paper's r = 8 share on ConvNeXt-V2-L. All else as the base.
_base_ = './maskrcnn_convnextv2_atto_demo.py'

model = dict(
    backbone=dict(
        adapter=dict(method='lora', r=2, mode='structured', lora_conv_form='loralib')))
