"""Closed-form MACs of the operations a whole network dispatches. Pure: no torch.

Each function takes shapes and hyper-parameters (numbers a module or a spec states, or an input
shape) and returns a :class:`~convcalc.formulas.Derived`: the value and the formula with the
numbers put in. The measured side (:mod:`convcalc.opcount`) counts the shapes torch's dispatch
really saw with its own rules; nothing here is called by it.

Conventions, the same as for a single layer (see :mod:`convcalc.formulas`):

* one MAC per multiply-accumulate of a matrix product or a convolution; bias additions are not
  MACs; elementwise arithmetic (softmax, scaling, masking, dropout, activations, norms) is not
  counted, and the measured side lists such operators by name as not counted.
* FLOPs are 2 per MAC (torch.utils.flop_counter's rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from convcalc._dataclass import dataclass
from convcalc.core.formulas import MUL, Derived, group, shape_text
from convcalc.core.spec import InputSpec, Ints
from convcalc.errors import SpecError
from convcalc.kinds import ConvSpec
from convcalc.kinds.conv import macs

#: what attention formulas leave out, said in their text
ATTENTION_NOT_COUNTED = "softmax, scaling, masking and dropout are not MACs: not counted"


def _prod_text(values: Sequence[int]) -> str:
    return MUL.join(str(v) for v in values) if values else "1"


def mm_macs(m: int, k: int, n: int) -> Derived[int]:
    """``(m×k)·(k×n)``: ``m·k·n`` MACs (``addmm``'s added matrix is not a MAC)."""
    value = m * k * n
    return Derived(value, f"{m}{MUL}{k}{MUL}{n} = {group(value)}")


def bmm_macs(b: int, m: int, k: int, n: int) -> Derived[int]:
    """A batch of ``b`` products ``(m×k)·(k×n)``: ``b·m·k·n`` MACs (also ``baddbmm``)."""
    value = b * m * k * n
    return Derived(value, f"{b}{MUL}{m}{MUL}{k}{MUL}{n} = {group(value)}")


def _broadcast(a: Sequence[int], b: Sequence[int], what: str) -> Ints:
    out: list[int] = []
    for x, y in zip((1,) * (len(b) - len(a)) + tuple(a), (1,) * (len(a) - len(b)) + tuple(b)):
        if x != y and 1 not in (x, y):
            raise SpecError(what, f"batch dimensions {shape_text(a)} and {shape_text(b)} differ")
        out.append(max(x, y))
    return tuple(out)


def matmul_macs(a_shape: Sequence[int], b_shape: Sequence[int]) -> Derived[int]:
    """``torch.matmul`` semantics: a 1-D operand is a row (left) or a column (right); the batch
    dimensions broadcast; ``∏batch·m·k·n`` MACs."""
    if not a_shape or not b_shape:
        raise SpecError("matmul", "matmul needs operands of at least one dimension")
    a = (1, *a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b = (*b_shape, 1) if len(b_shape) == 1 else tuple(b_shape)
    m, k, k2, n = a[-2], a[-1], b[-2], b[-1]
    if k != k2:
        raise SpecError(
            "matmul", f"inner sizes differ: {shape_text(a_shape)} @ {shape_text(b_shape)}"
        )
    batch = _broadcast(a[:-2], b[:-2], "matmul")
    value = math.prod(batch) * m * k * n
    return Derived(value, f"{_prod_text((*batch, m, k, n))} = {group(value)}")


def linear_macs(input_shape: Sequence[int], in_features: int, out_features: int) -> Derived[int]:
    """``nn.Linear`` applies to every position of the leading dimensions:
    ``∏leading·in·out`` MACs (bias additions not counted)."""
    if not input_shape or input_shape[-1] != in_features:
        raise SpecError(
            "input",
            f"a linear layer with in_features={in_features} cannot take {shape_text(input_shape)}",
        )
    leading = tuple(input_shape[:-1])
    value = math.prod(leading) * in_features * out_features
    lead = _prod_text(leading)
    return Derived(value, f"{lead}{MUL}{in_features}{MUL}{out_features} = {group(value)}")


def conv_macs(spec: ConvSpec, input_shape: Sequence[int]) -> Derived[int]:
    """A convolution or transposed convolution on an input of ``input_shape`` (N, C, *size):
    :func:`convcalc.formulas.macs`, the single-layer formula."""
    if len(input_shape) != spec.dims + 2:
        raise SpecError(
            "input", f"a {spec.dims}-d convolution cannot take {shape_text(input_shape)}"
        )
    n, _, *size = input_shape
    return macs(spec, InputSpec(n, spec.in_channels, tuple(size)))


def sdpa_macs(
    q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]
) -> Derived[int]:
    """Scaled dot-product attention, q (…, L, E), k (…, S, E), v (…, S, Ev):
    q·kᵀ costs ``B·L·S·E`` and attn·v ``B·L·S·Ev`` MACs, B the product of the broadcast leading
    dimensions (batch × heads). A causal mask is applied to the full L×S product (torch's
    counter counts so too)."""
    if len(q_shape) < 2 or len(k_shape) < 2 or len(v_shape) < 2:
        raise SpecError("attention", "query, key and value need at least 2 dimensions")
    length, e = q_shape[-2], q_shape[-1]
    source, ek = k_shape[-2], k_shape[-1]
    if ek != e or v_shape[-2] != source:
        raise SpecError(
            "attention",
            f"shapes q {shape_text(q_shape)}, k {shape_text(k_shape)}, v {shape_text(v_shape)} "
            "do not fit",
        )
    ev = v_shape[-1]
    batch = _broadcast(_broadcast(q_shape[:-2], k_shape[:-2], "attention"), v_shape[:-2], "a")
    b = math.prod(batch)
    scores = b * length * source * e
    mixed = b * length * source * ev
    value = scores + mixed
    bt = _prod_text(batch)
    parts = {
        "q·kᵀ": f"{bt}{MUL}{length}{MUL}{source}{MUL}{e} = {group(scores)}",
        "attn·v": f"{bt}{MUL}{length}{MUL}{source}{MUL}{ev} = {group(mixed)}",
    }
    shown = (
        f"q·kᵀ {parts['q·kᵀ']} + attn·v {parts['attn·v']} = {group(value)} "
        f"({ATTENTION_NOT_COUNTED})"
    )
    return Derived(value, shown, parts)


def mha_sizes(query: Ints, key: Ints, batch_first: bool) -> tuple[int, int, int]:
    """(batch, query length, source length) of one nn.MultiheadAttention call, from the shapes
    of its query and key: unbatched (L, E), batch-first (N, L, E) or sequence-first (L, N, E)."""
    if len(query) == 2:
        return 1, query[0], key[0]
    if batch_first:
        return query[0], query[1], key[1]
    return query[1], query[0], key[0]


def mha_macs(
    batch: int,
    target_length: int,
    source_length: int,
    embed_dim: int,
    num_heads: int,
    kdim: int | None = None,
    vdim: int | None = None,
) -> Derived[int]:
    """``nn.MultiheadAttention``: the q, k, v and output projections plus the two attention
    products. With B batch, L target and S source positions, E embed, h heads:
    q proj ``B·L·E·E``, k proj ``B·S·kdim·E``, v proj ``B·S·vdim·E``, q·kᵀ ``B·h·L·S·(E/h)``,
    attn·v ``B·h·L·S·(E/h)``, out proj ``B·L·E·E``."""
    if num_heads <= 0 or embed_dim % num_heads:
        raise SpecError("heads", f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
    kdim = embed_dim if kdim is None else kdim
    vdim = embed_dim if vdim is None else vdim
    head = embed_dim // num_heads
    b, length, source, e, h = batch, target_length, source_length, embed_dim, num_heads
    pieces = {
        "q proj": ((b, length, e, e), b * length * e * e),
        "k proj": ((b, source, kdim, e), b * source * kdim * e),
        "v proj": ((b, source, vdim, e), b * source * vdim * e),
        "q·kᵀ": ((b, h, length, source, head), b * h * length * source * head),
        "attn·v": ((b, h, length, source, head), b * h * length * source * head),
        "out proj": ((b, length, e, e), b * length * e * e),
    }
    parts = {
        name: f"{_prod_text(factors)} = {group(value)}" for name, (factors, value) in pieces.items()
    }
    value = sum(v for _, v in pieces.values())
    shown = " + ".join(f"{name} {parts[name]}" for name in parts)
    return Derived(value, f"{shown} = {group(value)} ({ATTENTION_NOT_COUNTED})", parts)


def mha_bias_adds(
    batch: int, target_length: int, source_length: int, embed_dim: int, bias: bool = True
) -> Derived[int]:
    """Bias additions of ``nn.MultiheadAttention``: each projection adds its E-long bias at
    every position it projects: q ``B·L·E``, k ``B·S·E``, v ``B·S·E`` (in_proj_bias, E each
    whatever kdim and vdim are) and out ``B·L·E`` (out_proj.bias); 0 with bias=False.
    add_bias_kv's rows are appended to key and value, not added: not counted."""
    if not bias:
        return Derived(0, "0 (bias=False)")
    b, length, source, e = batch, target_length, source_length, embed_dim
    value = b * (2 * length + 2 * source) * e
    shown = (
        f"q {b}{MUL}{length}{MUL}{e} + k {b}{MUL}{source}{MUL}{e} + v {b}{MUL}{source}{MUL}{e}"
        f" + out {b}{MUL}{length}{MUL}{e} = {group(value)}"
    )
    return Derived(value, shown)


def mha_params(
    embed_dim: int,
    kdim: int | None = None,
    vdim: int | None = None,
    bias: bool = True,
    bias_kv: bool = False,
) -> Derived[int]:
    """Parameters of ``nn.MultiheadAttention``: the q, k, v projection weights ``E·E + E·kdim +
    E·vdim`` (one in_proj_weight of 3E×E when kdim = vdim = E), the output projection ``E·E``,
    with bias ``3E`` (in_proj_bias) + ``E`` (out_proj.bias), and ``2E`` for add_bias_kv."""
    e = embed_dim
    kdim = e if kdim is None else kdim
    vdim = e if vdim is None else vdim
    weights = e * e + e * kdim + e * vdim + e * e
    biases = 4 * e if bias else 0
    extra = 2 * e if bias_kv else 0
    value = weights + biases + extra
    shown = f"q,k,v proj {e}{MUL}({e} + {kdim} + {vdim}) + out proj {e}{MUL}{e}"
    if biases:
        shown += f" + bias 4{MUL}{e}"
    if extra:
        shown += f" + bias_k, bias_v 2{MUL}{e}"
    return Derived(value, f"{shown} = {group(value)}")


def _einsum_terms(equation: str, shapes: Sequence[Sequence[int]]) -> tuple[list[str], str]:
    """Operand subscripts and the output subscript, '...' spelt out as capital letters."""
    text = equation.replace(" ", "")
    inputs_text, arrow, output = text.partition("->")
    terms = inputs_text.split(",")
    if len(terms) != len(shapes):
        raise SpecError("einsum", f"{equation!r} names {len(terms)} operands, given {len(shapes)}")
    spare = [chr(c) for c in range(ord("Z"), ord("A") - 1, -1)]
    widest = 0
    for term, shape in zip(terms, shapes):
        if "..." in term:
            widest = max(widest, len(shape) - (len(term) - 3))
    ellipsis = "".join(spare[:widest][::-1])
    expanded = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            count = len(shape) - (len(term) - 3)
            term = term.replace("...", ellipsis[widest - count :])
        if len(term) != len(shape):
            raise SpecError("einsum", f"{term!r} does not fit an operand of {shape_text(shape)}")
        expanded.append(term)
    if not arrow:  # implicit output: letters seen once, alphabetical
        letters = "".join(expanded)
        output = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    else:
        output = output.replace("...", ellipsis)
    return expanded, output


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> Derived[int]:
    """Multiply-accumulates of ``torch.einsum`` evaluated as torch does without opt_einsum:
    operands contracted left to right, two at a time. In each pair, a letter found in one operand
    only and needed neither later nor in the output is summed out first (a reduction, not a
    MAC); the pair then costs the product of the sizes of its remaining letters when some letter
    of size above 1 is contracted (torch runs a batched matrix product), and 0 when none is (an
    elementwise or outer product, or a contraction over size 1: multiplies without
    accumulation, which torch runs as ``mul``: not counted)."""
    terms, output = _einsum_terms(equation, shapes)
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for letter, size in zip(term, shape):
            if sizes.get(letter, 1) != size and size != 1 and sizes.get(letter, 1) != 1:
                raise SpecError("einsum", f"index {letter!r} has sizes {sizes[letter]} and {size}")
            sizes[letter] = max(sizes.get(letter, 1), size)
    if len(terms) == 1:
        return Derived(0, "0 (one operand: a sum or a transposition, no multiply-accumulates)")
    total = 0
    steps: list[str] = []
    left = set(terms[0])
    for index, term in enumerate(terms[1:], start=1):
        later = set(output).union(*[set(t) for t in terms[index + 1 :]])
        right = set(term)
        left_kept = {c for c in left if c in right or c in later}
        right_kept = {c for c in right if c in left or c in later}
        letters = sorted(left_kept | right_kept)
        contracted = [
            c
            for c in letters
            if c in left_kept and c in right_kept and c not in later and sizes[c] > 1
        ]
        if contracted:
            value = math.prod(sizes[c] for c in letters)
            factors = MUL.join(f"{c}={sizes[c]}" for c in letters)
            steps.append(f"{factors} = {group(value)}")
        else:
            value = 0
            steps.append("0 (no contracted index: elementwise multiplies, not counted)")
        total += value
        left = {c for c in letters if c in later}
    body = " + ".join(steps) if len(steps) > 1 else steps[0]
    shown = f"{equation}: {body}"
    if len(steps) > 1:
        shown += f" = {group(total)}"
    return Derived(total, shown)


def flops_of(mac: Derived[int]) -> Derived[int]:
    """Two FLOPs per MAC."""
    return Derived(2 * mac.value, f"2{MUL}{group(mac.value)} = {group(2 * mac.value)}")


# --- recurrent modules: nn.LSTM / nn.GRU / nn.RNN and their cells -------------------------------

#: gates of each recurrent mode (torch's ``RNNBase.mode``; a cell's type without "Cell")
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1, "RNN": 1}
#: what recurrent formulas leave out, said in their text
RECURRENT_NOT_COUNTED = (
    "the gates' elementwise arithmetic (sigmoid, tanh, the cell update) and bias additions "
    "are not MACs: not counted"
)


@dataclass(frozen=True)
class RecurrentHyper:
    """What an ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (``cell``: an ``nn.LSTMCell``, ``GRUCell``
    or ``RNNCell``) states: enough for its closed forms. Plain numbers, read off the module."""

    #: "LSTM", "GRU", "RNN_TANH" or "RNN_RELU" (a cell: "LSTM", "GRU" or "RNN")
    mode: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    #: LSTM's proj_size (0: none): h is projected to proj_size by w_hr
    proj_size: int = 0
    bias: bool = True
    batch_first: bool = False
    cell: bool = False

    @property
    def gates(self) -> int:
        return RECURRENT_GATES[self.mode]

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        """The size of h (and of each direction's output): proj_size, else hidden_size."""
        return self.proj_size or self.hidden_size

    def layer_input(self, layer: int) -> int:
        """Layer 0 reads input_size; a later layer both directions' h of the layer below."""
        return self.input_size if layer == 0 else self.directions * self.out_size


def _layer_groups(hyper: RecurrentHyper) -> list[tuple[str, int, int]]:
    """(label, how many layers, input size): layer 0, and the later layers together (they
    all read directions·out_size)."""
    groups = [("layer 0", 1, hyper.input_size)]
    later = hyper.num_layers - 1
    if later == 1:
        groups.append(("layer 1", 1, hyper.layer_input(1)))
    elif later > 1:
        groups.append((f"layers 1–{later}", later, hyper.layer_input(1)))
    return groups


def _times(count: int, directions: int) -> tuple[int, str]:
    """How many (layer, direction) copies a group holds, and its ``N×`` prefix ('' for 1)."""
    copies = count * directions
    return copies, (f"{copies}{MUL}" if copies > 1 else "")


def recurrent_params(hyper: RecurrentHyper) -> Derived[int]:
    """Parameters per layer and direction: ``w_ih`` gates·H·in, ``w_hh`` gates·H·out (out =
    proj_size, else H), with bias ``b_ih`` and ``b_hh`` 2·gates·H, with proj_size ``w_hr``
    proj·H; ``in`` is input_size for layer 0, directions·out for later layers."""
    g, h, p = hyper.gates, hyper.hidden_size, hyper.proj_size
    out = hyper.out_size
    value = 0
    pieces = []
    for label, count, width in _layer_groups(hyper):
        one = g * h * (width + out) + (2 * g * h if hyper.bias else 0) + p * h
        copies, prefix = _times(count, hyper.directions)
        value += copies * one
        text = f"{g}{MUL}{h}{MUL}({width} + {out})"
        if hyper.bias:
            text += f" + bias 2{MUL}{g}{MUL}{h}"
        if p:
            text += f" + w_hr {p}{MUL}{h}"
        pieces.append(f"{label}: {prefix}({text})" if prefix else f"{label}: {text}")
    if hyper.cell:
        return Derived(value, f"{pieces[0].split(': ', 1)[1]} = {group(value)}")
    return Derived(value, f"{' + '.join(pieces)} = {group(value)}")


def recurrent_rows(
    hyper: RecurrentHyper, input_shape: Sequence[int], packed: bool = False
) -> Derived[int]:
    """The (time step, batch row) pairs one call runs, from its input's shape: (T, B, I), (B,
    T, I) with batch_first, unbatched (T, I); packed data (ΣB_t, I), whose first axis is the sum
    of the sequences' lengths; a cell's (B, I) or unbatched (I)."""
    shape = tuple(input_shape)
    if not shape or shape[-1] != hyper.input_size:
        raise SpecError(
            "input",
            f"a recurrent module with input_size={hyper.input_size} cannot take "
            f"{shape_text(shape)}",
        )
    if hyper.cell:
        if len(shape) not in (1, 2):
            raise SpecError(
                "input", f"a recurrent cell takes (B, I) or (I), not {shape_text(shape)}"
            )
        rows = shape[0] if len(shape) == 2 else 1
        return Derived(rows, f"{rows} (batch rows)" if len(shape) == 2 else "1 (unbatched)")
    if packed:
        if len(shape) != 2:
            raise SpecError("input", f"packed data is (ΣB_t, I), not {shape_text(shape)}")
        return Derived(
            shape[0], f"{shape[0]} (packed: ΣB_t, the sum of the lengths, the data's first axis)"
        )
    if len(shape) == 2:
        return Derived(shape[0], f"{shape[0]} (unbatched: time steps)")
    if len(shape) != 3:
        raise SpecError(
            "input", f"a recurrent module takes (T, B, I) or (T, I), not {shape_text(shape)}"
        )
    steps, batch = (shape[1], shape[0]) if hyper.batch_first else (shape[0], shape[1])
    rows = steps * batch
    return Derived(rows, f"{steps}{MUL}{batch} = {group(rows)} (time steps{MUL}batch)")


def recurrent_macs(
    hyper: RecurrentHyper, input_shape: Sequence[int], packed: bool = False
) -> Derived[int]:
    """MACs of one call: every (time step, batch row) pair meets every layer's and direction's
    weights once: gates·H·(in + out) (w_ih and w_hh), + proj·H (w_hr) with proj_size; FLOPs
    are 2·MACs (:func:`flops_of`)."""
    rows = recurrent_rows(hyper, input_shape, packed)
    g, h, p, out = hyper.gates, hyper.hidden_size, hyper.proj_size, hyper.out_size
    per_row = 0
    pieces = []
    for label, count, width in _layer_groups(hyper):
        one = g * h * (width + out) + p * h
        copies, prefix = _times(count, hyper.directions)
        per_row += copies * one
        text = f"{g}{MUL}{h}{MUL}({width} + {out})" + (f" + {p}{MUL}{h}" if p else "")
        pieces.append(f"{label}: {prefix}({text})" if prefix else f"{label}: {text}")
    value = rows.value * per_row
    body = pieces[0].split(": ", 1)[1] if hyper.cell else " + ".join(pieces)
    shown = (
        f"rows {rows.shown} {MUL} [{body} = {group(per_row)}] = {group(value)} "
        f"({RECURRENT_NOT_COUNTED})"
    )
    return Derived(value, shown, {"rows": rows.shown, "per_row": group(per_row)})


def recurrent_outputs(
    hyper: RecurrentHyper, input_shape: Sequence[int], packed: bool = False
) -> Derived[tuple[Ints, ...]]:
    """The output tensors' shapes of one call. A module: output (T, B, D·out) ((B, T, D·out)
    with batch_first; (T, D·out) unbatched), h_n (L·D, B, out) and for an LSTM c_n (L·D, B, H).
    Packed: the output's data (ΣB_t, D·out) only: h_n's batch is the number of sequences, which
    the packed data's shape does not hold (it is a value of batch_sizes). A cell: h' (B, H) (and
    c' for an LSTMCell); (H) unbatched."""
    recurrent_rows(hyper, input_shape, packed)  # checks the input
    shape = tuple(input_shape)
    h, out = hyper.hidden_size, hyper.out_size
    lstm = hyper.mode == "LSTM"
    if hyper.cell:
        state = (*shape[:-1], h)
        shapes: tuple[Ints, ...] = (state, state) if lstm else (state,)
        return Derived(shapes, f"h' {shape_text(state)}" + (" and c' likewise" if lstm else ""))
    width = hyper.directions * out
    layers = hyper.num_layers * hyper.directions
    if packed:
        data = (shape[0], width)
        return Derived(
            (data,),
            f"packed data {shape[0]}{MUL}{width} (D{MUL}out = {hyper.directions}{MUL}{out}); "
            "h_n's batch is the number of sequences, not a shape of the packed input: "
            "no formula for it",
        )
    output = (*shape[:-1], width)
    batch = () if len(shape) == 2 else ((shape[0],) if hyper.batch_first else (shape[1],))
    h_n = (layers, *batch, out)
    c_n = (layers, *batch, h)
    shapes = (output, h_n, c_n) if lstm else (output, h_n)
    shown = (
        f"output {shape_text(output)} (D{MUL}out = {hyper.directions}{MUL}{out}), "
        f"h_n {shape_text(h_n)} (L{MUL}D = {hyper.num_layers}{MUL}{hyper.directions})"
    )
    if lstm:
        shown += f", c_n {shape_text(c_n)}"
    return Derived(shapes, shown)


# --- parameters of modules with no MACs (embeddings, norms, PReLU) ---------------------------

#: the kinds :class:`ParamHyper` states, and the group each is named under in a total's text
PARAM_KINDS = {
    "Embedding": "embeddings",
    "EmbeddingBag": "embeddings",
    "LayerNorm": "norms",
    "RMSNorm": "norms",
    "GroupNorm": "norms",
    "InstanceNorm": "norms",
    "BatchNorm": "norms",
    "PReLU": "PReLU",
}


@dataclass(frozen=True)
class ParamHyper:
    """What a module with parameters and no counted work states about them: plain numbers read
    off the module (never its parameters' shapes), enough for :func:`module_params`.

    ``sizes``: Embedding / EmbeddingBag (num_embeddings, embedding_dim); LayerNorm / RMSNorm
    normalized_shape; GroupNorm (num_channels,); InstanceNorm / BatchNorm (num_features,);
    PReLU (num_parameters,). ``affine``: elementwise_affine (LayerNorm, RMSNorm) or affine
    (GroupNorm, InstanceNorm, BatchNorm); ``bias``: whether the affine part has a bias."""

    kind: str
    sizes: tuple[int, ...]
    affine: bool = True
    bias: bool = True


def module_params(hyper: ParamHyper) -> Derived[int]:
    """Parameters of an embedding, a norm or a PReLU, from its hyper-parameters (torch 2.13):

    * ``nn.Embedding`` / ``nn.EmbeddingBag``: ``num_embeddings·embedding_dim`` (padding_idx,
      max_norm, sparse and EmbeddingBag's mode change no count; per_sample_weights are an
      input, not a parameter);
    * ``nn.LayerNorm``: ``prod(normalized_shape)·(1 + bias)`` when elementwise_affine, else 0;
    * ``nn.RMSNorm``: ``prod(normalized_shape)`` when elementwise_affine (a weight, no bias);
    * ``nn.GroupNorm``: ``C·(1 + bias)`` when affine; ``nn.InstanceNorm*`` and
      ``nn.BatchNorm*`` likewise with num_features (running statistics are buffers);
    * ``nn.PReLU``: ``num_parameters``."""
    kind, sizes = hyper.kind, hyper.sizes
    if kind not in PARAM_KINDS:
        raise SpecError("module", f"no parameter formula for a {kind}")
    size = math.prod(sizes)
    shown = _prod_text(sizes)
    if kind in ("Embedding", "EmbeddingBag", "PReLU"):
        return Derived(size, f"{shown} = {group(size)}" if len(sizes) > 1 else group(size))
    if not hyper.affine:
        return Derived(0, "0 (no affine parameters)")
    if kind == "RMSNorm" or not hyper.bias:
        return Derived(size, f"{shown} = {group(size)}" if len(sizes) > 1 else group(size))
    return Derived(2 * size, f"2{MUL}{shown} = {group(2 * size)}")


def linear_param(in_features: int, out_features: int, which: str) -> Derived[int] | None:
    """One parameter of an ``nn.Linear`` by name: weight ``out·in``, bias ``out``."""
    if which == "weight":
        return Derived(in_features * out_features, f"{out_features}{MUL}{in_features}")
    if which == "bias":
        return Derived(out_features, str(out_features))
    return None


def module_param(hyper: ParamHyper, which: str) -> Derived[int] | None:
    """One parameter of a module :func:`module_params` knows, by name (``weight``, ``bias``):
    what a tied parameter held by two modules counts once (None: not one of its parameters)."""
    size = math.prod(hyper.sizes)
    norm = "Norm" in hyper.kind
    if which == "weight" and (not norm or hyper.affine):
        return Derived(size, _prod_text(hyper.sizes))
    if which == "bias" and norm and hyper.affine and hyper.bias and hyper.kind != "RMSNorm":
        return Derived(size, _prod_text(hyper.sizes))
    return None
