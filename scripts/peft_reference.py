#!/usr/bin/env python3
"""PyTorch reference implementation of the PEFT modules of sam-cobot (docs/methods.md).

The modules follow the authors' code as docs/methods.md describes it, generalised as in
docs/methods.md#larger-encoders (T = 2D for LoRA, T = D for adapters, gamma length 2r / V,
d_model = C), with the switches of docs/methods.md#ablation-switches as the tool names them:

    coefficients: "dual"  -> u = h * m_t + g * h,  m_t = (FacT_c @ FacT_p)[0, :, t]
                  "block" -> u = g * h             (no FacT_c / FacT_p at all)
    relation:     "learnable" (P trainable), "identity" (P = I, frozen),
                  "fixed" (P ~ U[0,1), frozen); only with coefficients = "dual"
    head:         "quaternion" (QuaternionLinear FacT_d1/FacT_d2, z = u . W, docs/methods.md#quaternion-head)
                  "linear"     (nn.Linear(k, k, bias=False), z = u . W^T, key FacT_d1.weight)
                  "none"       (z = u)

Module paths (and hence state-dict / parameter names) are the authors' (docs/methods.md#key-names):

    image_encoder.blocks.{i}.attn.qkv.qkv.{weight,bias}           (wrapped pretrained qkv)
    image_encoder.blocks.{i}.attn.qkv.linear_{a,b}_{q,v}.weight
    image_encoder.blocks.{i}.attn.qkv.{FacT_c,FacT_p,gamma}
    image_encoder.blocks.{i}.attn.qkv.FacT_d{1,2}.{r,i,j,k}_weight   (or .weight for "linear")
    image_encoder.blocks.{i}.mlp.mlp.lin{1,2}.{weight,bias}       (wrapped pretrained MLP)
    image_encoder.blocks.{i}.mlp.adapter_layer_norm_before.{weight,bias}
    image_encoder.blocks.{i}.mlp.{down,up}_proj.{weight,bias}
    image_encoder.blocks.{i}.mlp.{FacT_c,FacT_p,gamma}
    image_encoder.blocks.{i}.mlp.FacT_d1.{r,i,j,k}_weight         (or .weight)

FacT_c / FacT_p are ONE nn.Parameter object registered in every wrapper, so
`named_parameters()` lists them once, under block 0's name, and their .grad is the total
gradient from every module.

Initial values follow docs/methods.md#initial-values exactly (`init_peft_`); `perturb_peft_`
then adds seeded noise (used by the gradient fixtures so that no gradient is structurally zero).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

METHODS = ("freeze", "lightweight", "lora", "adapter", "full", "lora+cobot", "adapter+cobot")
COEFFICIENTS = ("dual", "block")
RELATIONS = ("learnable", "identity", "fixed")
HEADS = ("quaternion", "none", "linear")


# --------------------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------------------

def quaternion_weight(r, i, j, k):
    """[4a, 4b] matrix of docs/methods.md#quaternion-head (row blocks = input component, column blocks = output).

    Identical to pytorch-qnn's `quaternion_linear` kernel (torch.cat of
    [r,-i,-j,-k], [i,r,-k,j], [j,k,r,-i], [k,-j,i,r] along dim 0, those four along dim 1).
    """
    return torch.cat(
        [
            torch.cat([r, i, j, k], dim=1),
            torch.cat([-i, r, k, -j], dim=1),
            torch.cat([-j, -k, r, i], dim=1),
            torch.cat([-k, j, -i, r], dim=1),
        ],
        dim=0,
    )


class QuaternionLinear(nn.Module):
    """QuaternionLinear(in, out, bias=False): z = u . W (not W^T), W from quaternion_weight."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        assert in_features % 4 == 0 and out_features % 4 == 0
        a, b = in_features // 4, out_features // 4
        self.in_features, self.out_features = in_features, out_features
        self.r_weight = nn.Parameter(torch.zeros(a, b))
        self.i_weight = nn.Parameter(torch.zeros(a, b))
        self.j_weight = nn.Parameter(torch.zeros(a, b))
        self.k_weight = nn.Parameter(torch.zeros(a, b))

    def weight_matrix(self):
        return quaternion_weight(self.r_weight, self.i_weight, self.j_weight, self.k_weight)

    def forward(self, u):
        lead = u.shape[:-1]
        z = u.reshape(-1, self.in_features) @ self.weight_matrix()
        return z.reshape(*lead, self.out_features)


def make_head(head: str, k: int):
    if head == "quaternion":
        return QuaternionLinear(k, k)
    if head == "linear":
        return nn.Linear(k, k, bias=False)
    if head == "none":
        return None
    raise ValueError(head)


def apply_head(mod, u):
    return u if mod is None else mod(u)


class SharedRelation:
    """The shared FacT_c [1,k,T] / FacT_p [T,T] Parameters (one object for all wrappers)."""

    def __init__(self, k: int, T: int, relation: str):
        assert relation in RELATIONS
        self.k, self.T, self.relation = k, T, relation
        self.FacT_c = nn.Parameter(torch.ones(1, k, T))
        self.FacT_p = nn.Parameter(torch.eye(T), requires_grad=(relation == "learnable"))


# --------------------------------------------------------------------------------------
# LoRA (docs/methods.md#lora) and LoRA + COBOT (docs/methods.md#lora-with-cobot)
# --------------------------------------------------------------------------------------

class LoRAQKV(nn.Module):
    """Wraps blk.attn.qkv.  block_index i -> q module t = 2i, v module t = 2i+1."""

    def __init__(self, qkv: nn.Linear, r: int, block_index: int, cobot: bool = False,
                 coefficients: str = "dual", head: str = "quaternion", shared=None):
        super().__init__()
        C = qkv.in_features
        self.dim, self.r, self.block_index = C, r, block_index
        self.qkv = qkv
        self.linear_a_q = nn.Linear(C, r, bias=False)
        self.linear_b_q = nn.Linear(r, C, bias=False)
        self.linear_a_v = nn.Linear(C, r, bias=False)
        self.linear_b_v = nn.Linear(r, C, bias=False)
        self.cobot = cobot
        self.coefficients = coefficients
        self.head_kind = head
        if cobot:
            assert coefficients in COEFFICIENTS and head in HEADS and r % 4 == 0
            if coefficients == "dual":
                assert shared is not None
                self.FacT_c = shared.FacT_c
                self.FacT_p = shared.FacT_p
            self.gamma = nn.Parameter(torch.ones(2 * r))
            self.FacT_d1 = make_head(head, r)
            self.FacT_d2 = make_head(head, r)

    def _coef(self, h, t, g):
        if self.coefficients == "dual":
            m = (self.FacT_c @ self.FacT_p)[0, :, t]
            return h * m + g * h
        return g * h

    def forward(self, x):
        qkv = self.qkv(x)
        C, r = self.dim, self.r
        hq = self.linear_a_q(x)
        hv = self.linear_a_v(x)
        if self.cobot:
            t = 2 * self.block_index
            uq = self._coef(hq, t, self.gamma[0:r])
            uv = self._coef(hv, t + 1, self.gamma[r:2 * r])
            hq = apply_head(self.FacT_d1, uq)
            hv = apply_head(self.FacT_d2, uv)
        dq = self.linear_b_q(hq)
        dv = self.linear_b_v(hv)
        return torch.cat([qkv[..., 0:C] + dq, qkv[..., C:2 * C], qkv[..., 2 * C:3 * C] + dv], dim=-1)


# --------------------------------------------------------------------------------------
# AdaptFormer adapter (docs/methods.md#adaptformer-adapter) and adapter + COBOT
# (docs/methods.md#adapter-with-cobot)
# --------------------------------------------------------------------------------------

class AdapterMLP(nn.Module):
    """Wraps blk.mlp: out = MLP(n) + up(act(down(LN_ad(n)))) * 1.0, n = norm2 output."""

    def __init__(self, mlp: nn.Module, d_model: int, bottleneck: int, block_index: int,
                 cobot: bool = False, coefficients: str = "dual", head: str = "quaternion",
                 shared=None, dropout: float = 0.0):
        super().__init__()
        V = bottleneck
        self.block_index = block_index
        self.mlp = mlp
        self.adapter_layer_norm_before = nn.LayerNorm(d_model)  # eps 1e-5
        self.down_proj = nn.Linear(d_model, V)
        self.up_proj = nn.Linear(V, d_model)
        self.scale = 1.0
        self.dropout = dropout
        self.cobot = cobot
        self.coefficients = coefficients
        self.head_kind = head
        if cobot:
            assert coefficients in COEFFICIENTS and head in HEADS and V % 4 == 0
            if coefficients == "dual":
                assert shared is not None
                self.FacT_c = shared.FacT_c
                self.FacT_p = shared.FacT_p
            self.gamma = nn.Parameter(torch.ones(V))
            self.FacT_d1 = make_head(head, V)

    def forward(self, n):
        res = self.mlp(n)
        a = self.adapter_layer_norm_before(n)
        h = self.down_proj(a)
        if self.cobot:
            if self.coefficients == "dual":
                m = (self.FacT_c @ self.FacT_p)[0, :, self.block_index]
                u = h * m + self.gamma * h
            else:
                u = self.gamma * h
            h = apply_head(self.FacT_d1, u)
        h = F.relu(h)  # plain adapter: after down_proj; COBOT: after the head (docs/methods.md#adapter-with-cobot)
        h = F.dropout(h, p=self.dropout, training=self.training)
        u = self.up_proj(h) * self.scale
        return u + res


# --------------------------------------------------------------------------------------
# insertion, initialisation, trainable sets
# --------------------------------------------------------------------------------------

def insert_peft(sam, method: str, rank: int = 4, bottleneck: int = 16,
                coefficients: str = "dual", relation: str = "learnable", head: str = "quaternion",
                adapter_dropout: float = 0.0):
    """Wrap the encoder blocks of a segment_anything Sam in place (no-op for non-PEFT methods).

    Returns the SharedRelation (or None)."""
    assert method in METHODS, method
    if method not in ("lora", "adapter", "lora+cobot", "adapter+cobot"):
        return None
    enc = sam.image_encoder
    D = len(enc.blocks)
    cobot = method.endswith("+cobot")
    shared = None
    if method.startswith("lora"):
        T, k = 2 * D, rank
    else:
        T, k = D, bottleneck
    if cobot and coefficients == "dual":
        shared = SharedRelation(k, T, relation)
        shared.FacT_p._cobot_learnable = relation == "learnable"
    for i, blk in enumerate(enc.blocks):
        if method.startswith("lora"):
            blk.attn.qkv = LoRAQKV(blk.attn.qkv, rank, i, cobot=cobot, coefficients=coefficients,
                                   head=head, shared=shared)
        else:
            C = blk.norm2.normalized_shape[0]
            blk.mlp = AdapterMLP(blk.mlp, C, bottleneck, i, cobot=cobot,
                                 coefficients=coefficients, head=head, shared=shared,
                                 dropout=adapter_dropout)
    return shared


def peft_modules(sam):
    for m in sam.image_encoder.modules():
        if isinstance(m, (LoRAQKV, AdapterMLP)):
            yield m


def peft_named_tensors(sam):
    """name -> Parameter of every PEFT tensor (trainable or frozen), shared ones once.

    Names are relative to the SAM root.  The wrapped pretrained tensors are excluded."""
    out = {}
    seen = set()
    for mname, mod in sam.named_modules():
        if not isinstance(mod, (LoRAQKV, AdapterMLP)):
            continue
        for pname, p in mod.named_parameters():
            if pname.startswith("qkv.") or pname.startswith("mlp."):
                continue  # wrapped pretrained tensors
            if id(p) in seen:
                continue
            seen.add(id(p))
            out[f"{mname}.{pname}"] = p
    return out


def init_peft_(sam, gen: torch.Generator):
    """Initial values of docs/methods.md#initial-values, drawn from `gen` in the (deterministic)
    order of peft_named_tensors.

    LoRA A, B: Xavier-normal (std sqrt(2/(fan_in+fan_out))); adapter LN: weight 1, bias 0;
    down_proj.weight: Kaiming-uniform a=sqrt(5) -> U(-1/sqrt(C), 1/sqrt(C)); down_proj.bias 0;
    up_proj weight/bias 0; FacT_c ones; FacT_p identity ("fixed": U[0,1)); gamma ones;
    quaternion r_weight 0, i/j/k_weight U[0,1); linear head Kaiming-uniform -> U(+-1/sqrt(k)).
    """
    with torch.no_grad():
        for name, p in peft_named_tensors(sam).items():
            leaf = name.rsplit(".", 1)[1]
            shape = tuple(p.shape)
            if ".linear_a_" in name or ".linear_b_" in name:
                fan_out, fan_in = shape
                std = math.sqrt(2.0 / (fan_in + fan_out))
                p.copy_(torch.randn(shape, generator=gen) * std)
            elif ".adapter_layer_norm_before." in name:
                p.fill_(1.0 if leaf == "weight" else 0.0)
            elif ".down_proj.weight" in name:
                bound = 1.0 / math.sqrt(shape[1])
                p.copy_((torch.rand(shape, generator=gen) * 2 - 1) * bound)
            elif ".down_proj.bias" in name or ".up_proj." in name:
                p.zero_()
            elif leaf == "FacT_c":
                p.fill_(1.0)
            elif leaf == "FacT_p":
                p.copy_(torch.eye(shape[0]))
            elif leaf == "gamma":
                p.fill_(1.0)
            elif leaf == "r_weight":
                p.zero_()
            elif leaf in ("i_weight", "j_weight", "k_weight"):
                p.copy_(torch.rand(shape, generator=gen))
            elif ".FacT_d" in name and leaf == "weight":  # linear head
                bound = 1.0 / math.sqrt(shape[1])
                p.copy_((torch.rand(shape, generator=gen) * 2 - 1) * bound)
            else:
                raise RuntimeError(f"no init rule for {name}")


# scale of each init distribution, used by perturb_peft_ (noise std = NOISE_REL * scale)
NOISE_REL = 0.1


def _init_scale(name: str, shape) -> float:
    leaf = name.rsplit(".", 1)[1]
    if ".linear_a_" in name or ".linear_b_" in name:
        return math.sqrt(2.0 / (shape[0] + shape[1]))            # Xavier-normal std
    if ".down_proj.weight" in name or (".FacT_d" in name and leaf == "weight"):
        return 1.0 / math.sqrt(3.0 * shape[1])                     # std of U(+-1/sqrt(fan_in))
    if leaf in ("i_weight", "j_weight", "k_weight"):
        return math.sqrt(1.0 / 12.0)                               # std of U[0,1)
    # constants (ones, identity) and zero inits (LN bias, biases, up_proj.weight, r_weight)
    return 1.0


def perturb_peft_(sam, gen: torch.Generator, fixed_relation: bool):
    """Add seeded noise N(0, (0.1*scale)^2) to every PEFT tensor (scale = the init's std for
    random inits, 1 for constant inits incl. the zero ones), except a frozen FacT_p, which
    keeps its exact value: identity for relation "identity", U[0,1) for "fixed"."""
    with torch.no_grad():
        for name, p in peft_named_tensors(sam).items():
            leaf = name.rsplit(".", 1)[1]
            if leaf == "FacT_p" and not p.requires_grad:
                if fixed_relation:
                    p.copy_(torch.rand(tuple(p.shape), generator=gen))
                continue
            s = _init_scale(name, tuple(p.shape))
            p.add_(torch.randn(tuple(p.shape), generator=gen) * (NOISE_REL * s))


def set_trainable(sam, method: str):
    """Paper semantics (the tool's default, docs/methods.md#what-trains): lightweight = mask decoder; PEFT =
    PEFT tensors + mask decoder; full = every SAM parameter; freeze = nothing.  The prompt
    encoder is frozen except in full.  Frozen relation matrices stay frozen."""
    assert method in METHODS
    for p in sam.parameters():
        p.requires_grad_(False)
    if method == "freeze":
        return
    if method == "full":
        for p in sam.parameters():
            p.requires_grad_(True)
        return
    for p in sam.mask_decoder.parameters():
        p.requires_grad_(True)
    if method == "lightweight":
        return
    for mod in peft_modules(sam):
        for pname, p in mod.named_parameters():
            if pname.startswith("qkv.") or pname.startswith("mlp."):
                continue
            if pname == "FacT_p":  # frozen unless relation == "learnable"
                p.requires_grad_(bool(getattr(p, "_cobot_learnable", False)))
                continue
            p.requires_grad_(True)


def trainable_named(sam):
    """name -> Parameter for every trainable tensor, shared ones once (named_parameters order)."""
    return {n: p for n, p in sam.named_parameters() if p.requires_grad}


def count_params(sam):
    enc = sum(p.numel() for p in sam.image_encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in sam.parameters() if p.requires_grad)
    return enc, total
