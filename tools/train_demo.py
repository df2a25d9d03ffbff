"""Train the bundled demo detector (NanoDet-style, GFL head) on the synthetic shapes dataset.

Usage (reproduces the committed model):

    python tools/train_demo.py --seed 0 --out harness/assets/demo/demo-nanodet.onnx

* Data: ``harness.data.synthetic`` -- train split generated in memory (``split="train"``,
  ``seed=--seed``, JPEG round-tripped like the val files); the exported model is evaluated on the
  demo validation split ``generate_dataset(dir, num_images=200, seed=2026, split="val")``.
* Input: 192x192 f32 NCHW, BGR, (pixel - mean) / std, centred letterbox with zero padding.
* Output: ONNX opset 17, input ``image`` [batch, 3, 192, 192] (dynamic batch), output ``output``
  [batch, 756, C + 32]: C sigmoid-ed class scores, then 4 x 8 raw distribution logits (l, t, r, b);
  priors stride 8, 16, 32 in that order, row-major, centres at (col * stride, row * stride).

This is the only file in the project that imports torch; the harness package never does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pathlib
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F
from torch import nn

from harness.data.synthetic import (
    CATEGORY_IDS,
    CLASS_NAMES,
    generate_dataset,
    generate_image,
)

INPUT_W = INPUT_H = 192
STRIDES = (8, 16, 32)
REG_MAX = 7
MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
STD = np.array([57.375, 57.12, 58.395], np.float32)
NUM_CLASSES = len(CLASS_NAMES)
VAL_PARAMS = {"num_images": 200, "seed": 2026, "split": "val"}


# ----------------------------------------------------------------------------- preprocessing
def letterbox(img: np.ndarray, w_in: int = INPUT_W, h_in: int = INPUT_H):
    """Centred letterbox (uint8 canvas, pad 0). Returns canvas, (sx, sy), (pad_x, pad_y)."""
    h, w = img.shape[:2]
    scale = min(w_in / w, h_in / h)
    nw, nh = round(w * scale), round(h * scale)
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((h_in, w_in, 3), np.uint8)
    px, py = (w_in - nw) // 2, (h_in - nh) // 2
    canvas[py : py + nh, px : px + nw] = resized
    return canvas, (nw / w, nh / h), (px, py)


def normalize(canvases: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] BGR -> float32 [B, 3, H, W]."""
    x = (canvases.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def build_train_set(seed: int, num_images: int, cache_dir: pathlib.Path):
    cache = (
        cache_dir / f"harness_demo_train_s{seed}_n{num_images}_{INPUT_W}x{INPUT_H}.npz"
    )
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        return d["images"], d["boxes"], d["labels"], d["offsets"]
    images = np.zeros((num_images, INPUT_H, INPUT_W, 3), np.uint8)
    all_boxes, all_labels, offsets = [], [], [0]
    for i in range(num_images):
        img, objects = generate_image(seed, "train", i)
        __, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        canvas, (sx, sy), (px, py) = letterbox(img)
        images[i] = canvas
        for cls, (x, y, bw, bh) in objects:
            all_boxes.append(
                [x * sx + px, y * sy + py, (x + bw) * sx + px, (y + bh) * sy + py]
            )
            all_labels.append(cls)
        offsets.append(len(all_labels))
    boxes = np.array(all_boxes, np.float32).reshape(-1, 4)
    labels = np.array(all_labels, np.int64)
    offsets = np.array(offsets, np.int64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, boxes=boxes, labels=labels, offsets=offsets)
    os.replace(tmp, cache)
    return images, boxes, labels, offsets


# ----------------------------------------------------------------------------- model
def cbr(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DemoDet(nn.Module):
    """Small conv backbone -> PAN-lite neck -> per-level GFL heads."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 48):
        super().__init__()
        self.num_classes = num_classes
        self.stem = cbr(3, 16, 3, 2)  # /2
        self.s4 = nn.Sequential(cbr(16, 24, 3, 2), cbr(24, 24))  # /4
        self.s8 = nn.Sequential(cbr(24, 48, 3, 2), cbr(48, 48), cbr(48, 48))  # /8
        self.s16 = nn.Sequential(cbr(48, 64, 3, 2), cbr(64, 64))  # /16
        self.s32 = nn.Sequential(cbr(64, 96, 3, 2), cbr(96, 96))  # /32
        self.lat = nn.ModuleList([cbr(c, width, 1) for c in (48, 64, 96)])
        self.heads = nn.ModuleList(
            [nn.Sequential(cbr(width, width), cbr(width, width)) for _ in STRIDES]
        )
        self.outs = nn.ModuleList(
            [nn.Conv2d(width, num_classes + 4 * (REG_MAX + 1), 1) for _ in STRIDES]
        )
        for o in self.outs:
            nn.init.normal_(o.weight, std=0.01)
            nn.init.zeros_(o.bias)
            nn.init.constant_(o.bias[:num_classes], -4.595)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs [B, N, C + 32] (class logits, distribution logits)."""
        c3 = self.s8(self.s4(self.stem(x)))
        c4 = self.s16(c3)
        c5 = self.s32(c4)
        l3, l4, l5 = self.lat[0](c3), self.lat[1](c4), self.lat[2](c5)
        # top-down
        p5 = l5
        p4 = l4 + F.interpolate(p5, scale_factor=2.0, mode="nearest")
        p3 = l3 + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        # bottom-up
        n3 = p3
        n4 = p4 + F.max_pool2d(n3, 2)
        n5 = p5 + F.max_pool2d(n4, 2)
        outs = []
        for feat, head, out in zip((n3, n4, n5), self.heads, self.outs):
            outs.append(out(head(feat)).flatten(2))  # [B, C+32, h*w]
        return torch.cat(outs, dim=2).permute(0, 2, 1)


class ExportWrapper(nn.Module):
    """Applies sigmoid to the class channels inside the graph."""

    def __init__(self, model: DemoDet):
        super().__init__()
        self.model = model
        self.c = model.num_classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        raw = self.model(image)
        return torch.cat([raw[..., : self.c].sigmoid(), raw[..., self.c :]], dim=-1)


def make_priors(w: int = INPUT_W, h: int = INPUT_H):
    centres, strides = [], []
    for s in STRIDES:
        fh, fw = math.ceil(h / s), math.ceil(w / s)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centres.append(np.stack([xs.ravel() * s, ys.ravel() * s], 1))
        strides.append(np.full(fh * fw, s))
    return np.concatenate(centres).astype(np.float32), np.concatenate(strides).astype(
        np.float32
    )


# ----------------------------------------------------------------------------- assignment + losses
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


def atss_assign(centres, strides, level_ranges, gt, topk=9, anchor_scale=5.0):
    """ATSS: returns assigned gt index per prior (-1 = background)."""
    n = centres.shape[0]
    m = gt.shape[0]
    assigned = torch.full((n,), -1, dtype=torch.long)
    if m == 0:
        return assigned
    half = strides[:, None] * anchor_scale / 2
    anchors = torch.cat([centres - half, centres + half], 1)
    ious = box_iou(anchors, gt)  # [N, M]
    gt_c = (gt[:, :2] + gt[:, 2:]) / 2
    dist = torch.cdist(centres, gt_c)  # [N, M]
    cand = []
    for a, b in level_ranges:
        k = min(topk, b - a)
        cand.append(dist[a:b].topk(k, dim=0, largest=False).indices + a)  # [k, M]
    cand = torch.cat(cand, 0)  # [K, M]
    cand_iou = ious.gather(0, cand)
    thr = cand_iou.mean(0) + cand_iou.std(0)
    cx, cy = centres[cand, 0], centres[cand, 1]
    inside = (cx > gt[:, 0]) & (cx < gt[:, 2]) & (cy > gt[:, 1]) & (cy < gt[:, 3])
    pos = (cand_iou >= thr[None]) & inside
    mask = torch.zeros((n, m), dtype=torch.bool)
    cols = torch.arange(m).expand_as(cand)
    mask[cand[pos], cols[pos]] = True
    masked = torch.where(mask, ious, torch.full_like(ious, -1.0))
    best, idx = masked.max(1)
    assigned[best >= 0] = idx[best >= 0]
    return assigned


def giou_loss(p, t):
    lt = torch.maximum(p[:, :2], t[:, :2])
    rb = torch.minimum(p[:, 2:], t[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    ap = (p[:, 2:] - p[:, :2]).clamp(min=0).prod(-1)
    at = (t[:, 2:] - t[:, :2]).prod(-1)
    union = ap + at - inter + 1e-7
    iou = inter / union
    elt = torch.minimum(p[:, :2], t[:, :2])
    erb = torch.maximum(p[:, 2:], t[:, 2:])
    enc = (erb - elt).clamp(min=0).prod(-1) + 1e-7
    return 1 - (iou - (enc - union) / enc), iou


def compute_loss(raw, centres, strides, level_ranges, gts, labels):
    b, n, _ = raw.shape
    c = NUM_CLASSES
    cls_logits = raw[..., :c]
    reg = raw[..., c:].reshape(b, n, 4, REG_MAX + 1)
    proj = torch.arange(REG_MAX + 1, dtype=torch.float32)
    cls_target = torch.zeros_like(cls_logits)
    pos_b, pos_p, pos_gt = [], [], []
    for i in range(b):
        a = atss_assign(centres, strides, level_ranges, gts[i])
        p = torch.nonzero(a >= 0).squeeze(1)
        pos_b.append(torch.full_like(p, i))
        pos_p.append(p)
        pos_gt.append(gts[i][a[p]])
        cls_target_lbl = labels[i][a[p]]
        pos_gt[-1] = (pos_gt[-1], cls_target_lbl)
    pb = torch.cat(pos_b)
    pp = torch.cat(pos_p)
    tbox = torch.cat([g for g, _ in pos_gt])
    tlbl = torch.cat([l for _, l in pos_gt])
    num_pos = max(int(pb.numel()), 1)
    if pb.numel() > 0:
        pr = reg[pb, pp]  # [P, 4, 8]
        st = strides[pp][:, None]
        ctr = centres[pp]
        dist = (pr.softmax(-1) * proj).sum(-1) * st
        pbox = torch.cat([ctr - dist[:, :2], ctr + dist[:, 2:]], 1)
        lg, iou = giou_loss(pbox, tbox)
        cls_target[pb, pp, tlbl] = iou.detach().clamp(min=0)
        loss_box = lg.mean() * 2.0
        tdist = torch.cat([ctr - tbox[:, :2], tbox[:, 2:] - ctr], 1) / st
        tdist = tdist.clamp(0, REG_MAX - 0.01)
        left = tdist.floor().long()
        wl = left.float() + 1 - tdist
        wr = tdist - left.float()
        logp = F.log_softmax(pr, -1)
        dfl = -(
            logp.gather(-1, left[..., None]).squeeze(-1) * wl
            + logp.gather(-1, (left + 1)[..., None]).squeeze(-1) * wr
        )
        loss_dfl = dfl.mean() * 0.25 * 4
    else:
        loss_box = raw.sum() * 0
        loss_dfl = raw.sum() * 0
    sig = cls_logits.sigmoid()
    qfl = F.binary_cross_entropy_with_logits(
        cls_logits, cls_target, reduction="none"
    ) * (sig - cls_target).abs().pow(2)
    loss_cls = qfl.sum() / num_pos
    return loss_cls + loss_box + loss_dfl, (
        loss_cls.item(),
        loss_box.item(),
        loss_dfl.item(),
        num_pos,
    )


# ----------------------------------------------------------------------------- decode + eval (numpy)
def nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    order = scores.argsort(kind="stable")[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= thr]
    return np.array(keep, dtype=np.int64)


def decode(out: np.ndarray, centres, strides, score_thr=0.05, iou_thr=0.6, max_det=100):
    """out [N, C+32] (scores already sigmoid-ed) -> boxes [K,4] in input pixels, scores, labels."""
    c = NUM_CLASSES
    scores = out[:, :c]
    logits = out[:, c:].reshape(-1, 4, REG_MAX + 1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    prob = e / e.sum(-1, keepdims=True)
    dist = (prob * np.arange(REG_MAX + 1, dtype=np.float32)).sum(-1) * strides[:, None]
    boxes = np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], 1)
    pi, ci = np.nonzero(scores > score_thr)
    if pi.size == 0:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
        )
    b, s, l = boxes[pi], scores[pi, ci], ci
    off = l[:, None].astype(np.float32) * 4096.0
    keep = nms(b + off, s, iou_thr)[:max_det]
    return b[keep], s[keep], l[keep]


def evaluate(predict, ann_path: pathlib.Path, images_dir: pathlib.Path, batch: int = 8):
    """predict(float32 [B,3,H,W]) -> np [B,N,C+32] with sigmoid scores. Returns (mAP, AP50, AP75)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
    centres, strides = make_priors()
    infos = [gt.imgs[i] for i in sorted(gt.imgs)]
    results = []
    for k in range(0, len(infos), batch):
        chunk = infos[k : k + batch]
        canv, metas = [], []
        for info in chunk:
            img = cv2.imread(str(images_dir / info["file_name"]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            cv, sc, pad = letterbox(img)
            canv.append(cv)
            metas.append((info, sc, pad))
        out = predict(normalize(np.stack(canv)))
        for o, (info, (sx, sy), (px, py)) in zip(out, metas):
            boxes, scores, labels = decode(o, centres, strides)
            w, h = info["width"], info["height"]
            for bx, s, l in zip(boxes, scores, labels):
                x1 = float(np.clip((bx[0] - px) / sx, 0, w))
                y1 = float(np.clip((bx[1] - py) / sy, 0, h))
                x2 = float(np.clip((bx[2] - px) / sx, 0, w))
                y2 = float(np.clip((bx[3] - py) / sy, 0, h))
                results.append(
                    {
                        "image_id": info["id"],
                        "category_id": CATEGORY_IDS[int(l)],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(s),
                    }
                )
    evaluate.last_summary = "(no detections)"
    if not results:
        return 0.0, 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    evaluate.last_summary = buf.getvalue()
    return float(ev.stats[0]), float(ev.stats[1]), float(ev.stats[2])


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        type=pathlib.Path,
        default=ROOT / "harness/assets/demo/demo-nanodet.onnx",
    )
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=26)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--cache-dir",
        type=pathlib.Path,
        default=pathlib.Path(tempfile.gettempdir()) / "harness_demo_cache",
    )
    ap.add_argument(
        "--eval-every",
        type=int,
        default=6,
        help="evaluate on val every N epochs (0: only at the end)",
    )
    ap.add_argument(
        "--max-iters", type=int, default=0, help="debug: stop after N iterations"
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()

    images, boxes, labels, offsets = build_train_set(
        args.seed, args.train_images, args.cache_dir
    )
    print(
        f"train set: {len(images)} images, {len(labels)} objects ({time.time() - t_start:.1f}s)",
        flush=True,
    )
    val_dir = args.cache_dir / "val_s2026_n200"
    val_images, val_ann = generate_dataset(val_dir, **VAL_PARAMS)

    centres_np, strides_np = make_priors()
    centres, strides = torch.from_numpy(centres_np), torch.from_numpy(strides_np)
    level_ranges, a = [], 0
    for s in STRIDES:
        n = math.ceil(INPUT_H / s) * math.ceil(INPUT_W / s)
        level_ranges.append((a, a + n))
        a += n

    model = DemoDet()
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: {nparams} parameters, priors: {len(centres_np)}", flush=True)
    decay = [p for n_, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.05},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    iters_per_epoch = len(images) // args.batch
    total = iters_per_epoch * args.epochs
    warmup = min(300, total // 10)

    def lr_at(it):
        if it < warmup:
            return args.lr * (0.1 + 0.9 * it / warmup)
        p = (it - warmup) / max(1, total - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))

    def predict_torch(x):
        model.eval()
        with torch.no_grad():
            raw = model(torch.from_numpy(x))
            out = torch.cat(
                [raw[..., :NUM_CLASSES].sigmoid(), raw[..., NUM_CLASSES:]], -1
            ).numpy()
        model.train()
        return out

    it = 0
    t_train = time.time()
    for epoch in range(args.epochs):
        perm = rng.permutation(len(images))
        model.train()
        for bi in range(iters_per_epoch):
            idx = perm[bi * args.batch : (bi + 1) * args.batch]
            flips = rng.integers(0, 2, size=(len(idx), 2))
            batch_imgs = []
            gts, lbls = [], []
            for j, flip in zip(idx, flips):
                im = images[j]
                bx = boxes[offsets[j] : offsets[j + 1]].copy()
                if flip[0]:
                    im = im[:, ::-1]
                    bx[:, [0, 2]] = INPUT_W - bx[:, [2, 0]]
                if flip[1]:
                    im = im[::-1]
                    bx[:, [1, 3]] = INPUT_H - bx[:, [3, 1]]
                batch_imgs.append(im)
                gts.append(torch.from_numpy(bx))
                lbls.append(torch.from_numpy(labels[offsets[j] : offsets[j + 1]]))
            x = torch.from_numpy(normalize(np.stack(batch_imgs)))
            for g in opt.param_groups:
                g["lr"] = lr_at(it)
            raw = model(x)
            loss, parts = compute_loss(raw, centres, strides, level_ranges, gts, lbls)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 35.0)
            opt.step()
            it += 1
            if it % 50 == 0 or it == 1:
                el = time.time() - t_train
                print(
                    f"ep {epoch} it {it}/{total} loss {loss.item():.3f} cls {parts[0]:.3f} box {parts[1]:.3f} "
                    f"dfl {parts[2]:.3f} pos {parts[3]} lr {lr_at(it):.5f} {el:.0f}s ({el / it:.2f}s/it)",
                    flush=True,
                )
            if args.max_iters and it >= args.max_iters:
                break
        if args.max_iters and it >= args.max_iters:
            break
        if (
            args.eval_every
            and (epoch + 1) % args.eval_every == 0
            and epoch + 1 < args.epochs
        ):
            m = evaluate(predict_torch, val_ann, val_images)
            print(
                f"epoch {epoch + 1}: val mAP {m[0]:.4f} AP50 {m[1]:.4f} AP75 {m[2]:.4f} ({time.time() - t_train:.0f}s)",
                flush=True,
            )
    train_time = time.time() - t_train
    print(f"training time: {train_time:.0f}s", flush=True)

    # ------------------------------------------------------------------ export
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(model).eval()
    dummy = torch.zeros(1, 3, INPUT_H, INPUT_W)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(args.out),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["output"],
        dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}},
        do_constant_folding=True,
    )
    import onnx

    mp = onnx.load(str(args.out))
    # the exporter leaves the prior/channel dims symbolic; they are static, say so
    dims = mp.graph.output[0].type.tensor_type.shape.dim
    dims[1].Clear()
    dims[1].dim_value = len(centres_np)
    dims[2].Clear()
    dims[2].dim_value = NUM_CLASSES + 4 * (REG_MAX + 1)
    onnx.checker.check_model(mp)
    onnx.save(mp, str(args.out))
    data = args.out.read_bytes()
    print(
        f"exported {args.out} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})",
        flush=True,
    )

    # ------------------------------------------------------------------ verify with onnxruntime
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(args.out), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    outp = sess.get_outputs()[0]
    print(
        f"onnx input {inp.name} {inp.shape} {inp.type}; output {outp.name} {outp.shape} {outp.type}"
    )
    probe = (
        np.random.default_rng(123)
        .normal(size=(8, 3, INPUT_H, INPUT_W))
        .astype(np.float32)
    )
    o8 = sess.run(None, {"image": probe})[0]
    o4 = sess.run(None, {"image": probe[2:6]})[0]
    o1 = sess.run(None, {"image": probe[5:6]})[0]
    n_pri = len(centres_np)
    assert o8.shape == (8, n_pri, NUM_CLASSES + 32), o8.shape
    assert o4.shape == (4, n_pri, NUM_CLASSES + 32) and o1.shape == (
        1,
        n_pri,
        NUM_CLASSES + 32,
    )
    d1 = float(np.abs(o8[5] - o1[0]).max())
    d4 = float(np.abs(o8[2:6] - o4).max())
    with torch.no_grad():
        ot = wrapper(torch.from_numpy(probe)).numpy()
    dt = float(np.abs(ot - o8).max())
    print(
        f"batch invariance: max|b8-b1| {d1:.2e}, max|b8-b4| {d4:.2e}; torch vs onnx {dt:.2e}"
    )
    assert d1 < 1e-4 and d4 < 1e-4, "outputs depend on batch composition"
    assert o8[..., :NUM_CLASSES].min() >= 0 and o8[..., :NUM_CLASSES].max() <= 1

    def predict_onnx(x):
        return sess.run(None, {"image": x})[0]

    m = evaluate(predict_onnx, val_ann, val_images)
    print(evaluate.last_summary)
    print(
        f"FINAL (onnx, val seed=2026 n=200): mAP {m[0]:.4f} AP50 {m[1]:.4f} AP75 {m[2]:.4f}"
    )
    summary = {
        "mAP": m[0],
        "AP50": m[1],
        "AP75": m[2],
        "train_seconds": round(train_time),
        "total_seconds": round(time.time() - t_start),
        "onnx_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "params": nparams,
        "epochs": args.epochs,
        "train_images": args.train_images,
        "seed": args.seed,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
