"""PyTorch reference side of `sam-cobot predict`, for timing side by side.

Loads a SAM checkpoint with Meta's `segment_anything`, runs SamPredictor on one image with box
prompts (multimask off) at input size S, and writes the first mask as a PNG.

    python3 scripts/reference_predict.py --checkpoint sam_vit_b.pth --image img.png \
        --box 60,40,220,160 --out mask.png [--image-size 256] [--threads 2]
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry

VARIANTS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--box", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    variant = VARIANTS[state["image_encoder.patch_embed.proj.weight"].shape[0]]
    sam = sam_model_registry[variant]()
    sam.load_state_dict(state)
    s = args.image_size
    if s != sam.image_encoder.img_size:  # docs/sam.md#other-input-sizes: resize pos_embed, set the sizes
        g = s // 16
        pe = sam.image_encoder.pos_embed.data.permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(g, g), mode="bilinear", align_corners=False)
        sam.image_encoder.pos_embed = torch.nn.Parameter(pe.permute(0, 2, 3, 1))
        sam.image_encoder.img_size = s
        sam.prompt_encoder.image_embedding_size = (g, g)
        sam.prompt_encoder.input_image_size = (s, s)
        sam.prompt_encoder.mask_input_size = (4 * g, 4 * g)
    sam.eval()
    predictor = SamPredictor(sam)
    image = np.array(Image.open(args.image).convert("RGB"))
    boxes = torch.tensor([[float(v) for v in b.split(",")] for b in args.box])
    with torch.inference_mode():
        predictor.set_image(image)
        boxes = predictor.transform.apply_boxes_torch(boxes, image.shape[:2])
        masks, iou, _ = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False)
    Image.fromarray(masks[0, 0].numpy().astype(np.uint8) * 255).save(args.out)
    for i, v in enumerate(iou[:, 0].tolist()):
        print(f"mask {i}: predicted IoU {v:.4f}")


if __name__ == "__main__":
    main()
