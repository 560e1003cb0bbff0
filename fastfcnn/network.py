"""One training step of a fully connected net, as a sequence of kernel calls on preallocated buffers.

The engine is either fastfcnn.kernels (Numba) or fastfcnn.reference (NumPy): both expose the same
functions with the same arguments, so this file is the whole algorithm for both.
"""
import numpy as np

F32 = np.float32
CACHE_LINE = 64


def aligned_empty(shape, dtype=F32) -> np.ndarray:
    """An uninitialised C-ordered array whose data starts on a 64-byte cache line.

    NumPy aligns its arrays to 16 bytes, so a row of a (., 3072) float32 matrix starts mid-line
    and every 16-float vector load of it that the matrix products' packing makes spans two lines."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def aligned_copy(a) -> np.ndarray:
    """A C-ordered, cache-line-aligned copy of the array a (same dtype)."""
    a = np.asarray(a)
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def aligned_zeros(shape, dtype=F32) -> np.ndarray:
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out


def flat_zeros(shapes, dtype=F32) -> tuple:
    """(buffer, views): zeroed arrays of the given shapes laid end to end in one buffer, each
    starting on a cache line, with zeros between them. An elementwise pass over a slice of the
    buffer (the optimizer's update, over all weights at once) is then one kernel call, not one
    per array; the padding stays zero through such a pass (zero weights, gradients and moments)."""
    line = CACHE_LINE // np.dtype(dtype).itemsize
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    starts = np.cumsum([0] + [-(-n // line) * line for n in sizes]).tolist()
    flat = aligned_zeros(starts[-1], dtype)
    return flat, [flat[a : a + n].reshape(s) for a, n, s in zip(starts, sizes, shapes)]


class Workspace:
    """Every buffer a forward/backward pass touches, allocated once for up to `capacity` rows.

    rows(n) hands out views of the first n rows (built once per n and cached), so a run's short
    last batch reuses the same memory and nothing is allocated inside the step loop.

    sizes are the trainable layers' widths. raw_inputs is the row width when a fixed whitening
    map turns each row into the sizes[0] inputs of the first layer (None: no whitening).
    With dropout, drop_u[l] holds the uniform draws for the mask of hidden activation l.
    E is the engine (kernels or reference); x_dtype the dataset's (uint8 images, float32 features).
    """

    def __init__(self, E, sizes, capacity: int, raw_inputs=None, dropout: bool = False, x_dtype=np.uint8):
        self.E = E
        self.sizes = list(sizes)
        self.capacity = capacity
        self.raw_inputs = raw_inputs
        self._xb = aligned_empty(capacity * (raw_inputs or sizes[0]), x_dtype)
        self._xn = None if raw_inputs is None else aligned_empty(capacity * raw_inputs)
        self._drop_u = [aligned_empty(capacity * s) if dropout and 0 < l < len(sizes) - 1 else None
                        for l, s in enumerate(sizes)]
        self._acts = [aligned_empty(capacity * s) for s in sizes]        # acts[0]: normalised input
        self._deltas = [aligned_empty(capacity * s) for s in sizes]      # dL/d(pre-activation)
        self._labels = np.empty(capacity, np.int64)
        self._row_loss = np.empty(capacity, F32)
        self._pack = None
        self._views = {}

    @property
    def pack(self) -> np.ndarray:
        """Scratch of the packed matrix products (kernels.gemm_op), allocated on first use.
        The NumPy engine accepts it and leaves it alone."""
        if self._pack is None:
            cap, widths = self.capacity, self.sizes + ([self.raw_inputs] if self.raw_inputs else [])
            # op(a) of every product: x (cap, in) forward, dy.T (out, cap) and dy (cap, out) backward;
            # op(b), shared by the tasks of a narrow product, reduces over a width or the batch
            floats = self.E.packed_a_floats
            a_floats = max(max(floats(cap, w), floats(w, cap)) for w in widths)
            self._pack = self.E.pack_workspace(a_floats + max(map(self.E.packed_b_floats, widths + [cap])))
        return self._pack

    def rows(self, n: int) -> "Views":
        if n not in self._views:
            self._views[n] = Views(self, n)
        return self._views[n]


class Views:
    """The Workspace's buffers shaped for a batch of n rows."""

    def __init__(self, ws: Workspace, n: int):
        if not 1 <= n <= ws.capacity:
            raise ValueError(f"batch of {n} rows does not fit a workspace of {ws.capacity}")
        sizes = ws.sizes
        self.n = n
        d = ws.raw_inputs or sizes[0]
        self.xb = ws._xb[: n * d].reshape(n, d)
        self.xn = None if ws._xn is None else ws._xn[: n * d].reshape(n, d)   # normalised, pre-whitening
        self.drop_u = [None if u is None else u[: n * s].reshape(n, s) for u, s in zip(ws._drop_u, sizes)]
        self.acts = [a[: n * s].reshape(n, s) for a, s in zip(ws._acts, sizes)]
        self.deltas = [d[: n * s].reshape(n, s) for d, s in zip(ws._deltas, sizes)]
        # the normalised batch: the whitening map's input, else the first trainable layer's
        self.x_in = self.acts[0] if self.xn is None else self.xn
        self.labels = ws._labels[:n]
        self.row_loss = ws._row_loss[:n]
        self.ws = ws


def workspace_for(E, model, capacity: int, dropout: bool = False) -> Workspace:
    """A Workspace shaped for `model` (with room for its whitening map, if it has one)."""
    raw = None if model.whiten is None else model.n_inputs
    x_dtype = np.float32 if model.image_shape is None else np.uint8
    return Workspace(E, model.sizes, capacity, raw_inputs=raw, dropout=dropout, x_dtype=x_dtype)


def forward(E, model, x_norm, v: Views, dropout: float = 0.0, normalised: bool = False) -> np.ndarray:
    """Logits (n, classes) for the batch in v.xb (uint8 images or float32 features);
    x_norm = model.input_transform(). normalised: the batch is already normalised in v.x_in
    (E.gather_normalise or E.gather_augment_normalise, as steps and evaluation gather it), and
    v.xb is not read.

    With a whitening map P the images are normalised into v.xn and acts[0] = v.xn @ P.T + c is
    the first trainable layer's input (P is fixed: backward never reaches it). With dropout > 0
    every hidden activation is masked in place with the draws in v.drop_u (inverted dropout).
    """
    mean, inv_std = x_norm
    last = len(model.weights) - 1
    if model.whiten is None:       # the first product: of the first layer, or of the whitening map
        w, b, relu, out = model.weights[0], model.biases[0], last > 0, v.acts[1]
    else:
        w, b, relu, out = model.whiten, model.whiten_bias, False, v.acts[0]
    if normalised:
        E.linear_forward(v.x_in, w, b, relu, out, v.ws.pack)
    else:
        E.input_linear_forward(v.xb, mean, inv_std, w, b, relu, v.x_in, out, v.ws.pack)
    if model.whiten is not None:
        E.linear_forward(v.acts[0], model.weights[0], model.biases[0], last > 0, v.acts[1], v.ws.pack)
    for l in range(1, last + 1):
        if dropout > 0:
            E.dropout(v.acts[l], v.drop_u[l], F32(dropout))
        E.linear_forward(v.acts[l], model.weights[l], model.biases[l], l < last, v.acts[l + 1], v.ws.pack)
    return v.acts[-1]


def backward(E, model, v: Views, smoothing: float, grads_w, grads_b, dropout: float = 0.0) -> tuple:
    """Loss gradient and backprop for the batch forward() just ran; returns (the summed row loss,
    the number of rows classified right).

    With dropout, linear_grad_input's mask (activation > 0) already zeroes the dropped units;
    applying the same dropout to the gradient adds the missing 1/(1-p) of the kept ones.
    """
    last = len(model.weights) - 1
    loss, correct = E.softmax_xent_grad(v.acts[-1], v.labels, smoothing, v.deltas[-1], v.row_loss)
    for l in range(last, -1, -1):
        E.linear_grad_params(v.deltas[l + 1], v.acts[l], grads_w[l], grads_b[l], v.ws.pack)
        if l > 0:
            E.linear_grad_input(v.deltas[l + 1], model.weights[l], v.acts[l], v.deltas[l], v.ws.pack)
            if dropout > 0:
                E.dropout(v.deltas[l], v.drop_u[l], F32(dropout))
    return loss, correct


def batches(E, model, x, idx=None, batch: int = 256, flip_tta: bool = False):
    """Yield (ids, views, logits) for the rows x[idx] (all of x if idx is None), `batch` rows at a time.

    flip_tta: test-time augmentation; each image is also classified mirrored left-right and the
    two logits are averaged (images only). The logits are a view into a reused buffer.
    """
    if idx is None:
        idx = np.arange(len(x), dtype=np.int64)
    n = len(idx)
    ws = workspace_for(E, model, min(batch, max(n, 1)))
    x_norm = model.input_transform()
    if flip_tta:
        if model.image_shape is None:
            raise ValueError("flip TTA needs images")
        no_shift = np.zeros(ws.capacity, np.int64)
        mirror = np.ones(ws.capacity, bool)
        first_view = np.empty((ws.capacity, model.sizes[-1]), F32)
    for s in range(0, n, ws.capacity):
        v = ws.rows(min(ws.capacity, n - s))
        ids = idx[s : s + v.n]
        E.gather_normalise(x, ids, *x_norm, v.x_in)
        logits = forward(E, model, x_norm, v, normalised=True)
        if flip_tta:
            np.copyto(first_view[: v.n], logits)
            E.gather_augment_normalise(x, ids, no_shift[: v.n], no_shift[: v.n], mirror[: v.n], E.PAD_ZERO,
                                       *model.image_shape, *x_norm, v.xb, v.x_in)
            logits = forward(E, model, x_norm, v, normalised=True)
            logits += first_view[: v.n]
            logits *= F32(0.5)
        yield ids, v, logits


def evaluate(E, model, x, y, idx=None, batch: int = 256, flip_tta: bool = False) -> tuple:
    """(mean loss, accuracy) of `model` on the rows x[idx] (all of x if idx is None) with labels y[idx]."""
    n = len(y) if idx is None else len(idx)
    loss, correct = 0.0, 0
    for ids, v, logits in batches(E, model, x, idx, batch, flip_tta):
        np.take(y, ids, out=v.labels)
        batch_loss, batch_correct = E.softmax_xent_grad(logits, v.labels, 0.0, v.deltas[-1], v.row_loss)
        loss += batch_loss
        correct += batch_correct
    return loss / max(n, 1), correct / max(n, 1)


def predict_proba(E, model, x, batch: int = 256, flip_tta: bool = False) -> np.ndarray:
    """Class probabilities (N, classes) float32: the softmax of the logits of every row of x."""
    probs = np.empty((len(x), model.sizes[-1]), F32)
    for ids, v, logits in batches(E, model, x, None, batch, flip_tta):
        E.softmax(logits, probs[ids[0] : ids[0] + v.n])
    return probs


def predict_logits(E, model, x, batch: int = 256) -> np.ndarray:
    """The logits (N, classes) float32 of every row of x."""
    out = np.empty((len(x), model.sizes[-1]), F32)
    for ids, v, logits in batches(E, model, x, None, batch):
        out[ids[0] : ids[0] + v.n] = logits
    return out
