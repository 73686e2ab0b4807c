"""Meta's `Sam` built to the sizes a checkpoint's tensors imply, for any encoder width.

`sam_model_registry` only builds ViT-B/L/H; the shipped base model and the test fixtures are
smaller. Sizes are read off the shapes as sam-cobot reads them (docs/sam.md#checkpoint): heads
from the relative-position tables' width, global blocks from their length, the decoder's 8 heads
and attention downsampling 2 as Meta's builder fixes them.
"""
from functools import partial

import torch
from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                       TwoWayTransformer)


def load_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def build_sam(sd: dict) -> Sam:
    """A `Sam` with `sd` loaded (strict), in eval mode, at the checkpoint's native size."""
    pe = sd["image_encoder.patch_embed.proj.weight"]
    width, patch = pe.shape[0], pe.shape[-1]
    grid = sd["image_encoder.pos_embed"].shape[1]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("image_encoder.blocks."))
    head_dim = sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    global_blocks, window = [], 0
    for i in range(depth):
        n = sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]
        if n == 2 * grid - 1:
            global_blocks.append(i)
        else:
            window = (n + 1) // 2
    out_chans = sd["image_encoder.neck.0.weight"].shape[0]
    prompt_dim = sd["prompt_encoder.point_embeddings.0.weight"].shape[1]
    mask_in = sd["prompt_encoder.mask_downscaling.3.weight"].shape[0]
    dec_dim = sd["mask_decoder.mask_tokens.weight"].shape[1]
    tokens = sd["mask_decoder.mask_tokens.weight"].shape[0]
    dec_depth = 1 + max(int(k.split(".")[3]) for k in sd
                        if k.startswith("mask_decoder.transformer.layers."))
    dec_mlp = sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]
    iou_hidden = sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]
    iou_depth = 1 + max(int(k.split(".")[3]) for k in sd
                        if k.startswith("mask_decoder.iou_prediction_head.layers."))
    image_size = grid * patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch, embed_dim=width, depth=depth,
            num_heads=width // head_dim,
            mlp_ratio=sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / width,
            out_chans=out_chans, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            rel_pos_zero_init=True, window_size=window, global_attn_indexes=global_blocks),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size), mask_in_chans=mask_in),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=tokens - 1,
            transformer=TwoWayTransformer(depth=dec_depth, embedding_dim=dec_dim,
                                          mlp_dim=dec_mlp, num_heads=8),
            transformer_dim=dec_dim, iou_head_depth=iou_depth, iou_head_hidden_dim=iou_hidden),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    sam.load_state_dict(sd, strict=True)
    return sam.eval()
