"""The class embedding (issue 12): reference ops, registry checks, F.embedding and nn.Embedding.

Gradients: check_backward in float64 (central differences of the forward along random directions;
eps 1e-6, atol 1e-6, rtol 1e-4). The embedding is linear in the weight, so the differences are
exact up to rounding. Values against plain loops exactly (a lookup copies; the scatter-add of at
most a few float64 terms is compared at rtol 1e-12).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pygan
from pygan import nn, ops
from pygan.gradcheck import check_backward, check_double_backward
from pygan.nn import functional as F
from pygan.ops import reference as R

SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def _backward_loops(dy, indices, num_classes):
    dim = dy.shape[-1]
    dw = np.zeros((num_classes, dim))
    for i, k in enumerate(np.asarray(indices).reshape(-1)):
        dw[k] += dy.reshape(-1, dim)[i]
    return dw


# -- the reference ---------------------------------------------------------------------------------


def test_forward_picks_rows_and_backward_sums_repeats():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3))
    idx = np.array([[4, 0], [4, 4]])
    y = R.embedding_forward(w, idx)
    assert y.shape == (2, 2, 3)
    for a in range(2):
        for b in range(2):
            np.testing.assert_array_equal(y[a, b], w[idx[a, b]])
    dy = rng.standard_normal((2, 2, 3))
    dw = R.embedding_backward(dy, idx, 5)
    np.testing.assert_allclose(dw[4], dy[0, 0] + dy[1, 0] + dy[1, 1], rtol=1e-12)
    np.testing.assert_array_equal(dw[0], dy[0, 1])
    assert not dw[1:4].any()  # classes never named get exactly 0


def test_forward_is_a_fresh_array_for_every_index_shape():
    w = np.arange(12.0).reshape(4, 3)
    for idx in (np.array(2), np.array([2]), np.array([[2, 1]])):
        y = R.embedding_forward(w, idx)
        assert y.shape == idx.shape + (3,) and y.flags.c_contiguous and not np.shares_memory(y, w)
    y = R.embedding_forward(w, np.array(2))
    y[...] = -1
    assert w[2].tolist() == [6.0, 7.0, 8.0]


def test_empty_indices():
    w = np.ones((3, 2), np.float32)
    assert R.embedding_forward(w, np.zeros(0, np.int64)).shape == (0, 2)
    dw = R.embedding_backward(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), 3)
    assert dw.shape == (3, 2) and dw.dtype == np.float32 and not dw.any()
    # zero-width rows (embedding_dim 0) through the registry
    assert ops.embedding_forward(np.ones((3, 0), np.float32), np.array([[0, 2]])).shape == (1, 2, 0)
    assert ops.embedding_backward(np.ones((1, 2, 0), np.float32), np.array([[0, 2]]), 3).shape == (3, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    w = np.ones((3, 2), dtype)
    assert R.embedding_forward(w, np.array([0, 2])).dtype == dtype
    assert R.embedding_backward(np.ones((2, 2), dtype), np.array([0, 2]), 3).dtype == dtype


@st.composite
def cases(draw):
    num_classes, dim = draw(st.integers(1, 12)), draw(st.integers(1, 9))
    index_shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
    return num_classes, dim, index_shape


@SETTINGS
@given(case=cases(), seed=seeds)
def test_against_loops(case, seed):
    num_classes, dim, index_shape = case
    rng = np.random.default_rng(seed)
    w, idx = rng.standard_normal((num_classes, dim)), rng.integers(0, num_classes, index_shape)
    y = R.embedding_forward(w, idx)
    assert y.shape == index_shape + (dim,)
    np.testing.assert_array_equal(y.reshape(-1, dim), np.array([w[k] for k in idx.reshape(-1)]).reshape(-1, dim))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(R.embedding_backward(dy, idx, num_classes), _backward_loops(dy, idx, num_classes),
                               rtol=1e-12, atol=1e-15)


@SETTINGS
@given(case=cases(), seed=seeds)
def test_gradcheck(case, seed):
    """The backward is the adjoint of the forward in the weight (float64 finite differences)."""
    num_classes, dim, index_shape = case
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num_classes, index_shape)  # closed over: check_backward casts array inputs to float64
    check_backward(
        lambda w: R.embedding_forward(w, idx),
        lambda w, dy: (R.embedding_backward(dy, idx, num_classes),),
        (rng.standard_normal((num_classes, dim)),),
        rng=rng,
    )


@SETTINGS
@given(case=cases(), seed=seeds)
def test_backward_gradcheck(case, seed):
    """embedding_backward is linear in dy and its adjoint is the lookup (the double backward)."""
    num_classes, dim, index_shape = case
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num_classes, index_shape)
    check_backward(
        lambda dy: R.embedding_backward(dy, idx, num_classes),
        lambda dy, g: (R.embedding_forward(g, idx),),
        (rng.standard_normal(index_shape + (dim,)),),
        rng=rng,
    )


def test_torch_agrees():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    w, idx = rng.standard_normal((10, 6)), rng.integers(0, 10, (7, 3))
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(idx), tw)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(R.embedding_forward(w, idx), ty.detach().numpy())
    np.testing.assert_allclose(R.embedding_backward(dy, idx, 10), tw.grad.numpy(), rtol=1e-12, atol=1e-15)


# -- registry checks -------------------------------------------------------------------------------


def test_registry_dispatches_and_accepts_any_integer_dtype():
    w = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    for dtype in (np.int64, np.int32, np.uint8, np.int16, np.uint64):
        idx = np.array([5, 0, 5], dtype)
        np.testing.assert_array_equal(ops.embedding_forward(w, idx), w[[5, 0, 5]])
        assert ops.embedding_backward(np.ones((3, 4), np.float32), idx, 6)[5].tolist() == [2.0] * 4


def test_registry_rejects_bad_inputs():
    w = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"embedding: indices must lie in \[0, 4\), got values from 0 to 4"):
        ops.embedding_forward(w, np.array([0, 4]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\), got values from -1 to 2"):
        ops.embedding_forward(w, np.array([[2], [-1]]))
    with pytest.raises(TypeError, match=r"embedding: indices must be an integer array of class indices, got float"):
        ops.embedding_forward(w, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"indices must be an integer array of class indices, got bool"):
        ops.embedding_forward(w, np.array([True, False]))
    with pytest.raises(TypeError, match=r"embedding: indices must be an integer array, got list"):
        ops.embedding_forward(w, [0, 1])
    with pytest.raises(ValueError, match=r"embedding: weight must be 2-D \(num_embeddings, embedding_dim\), got shape \(4,\)"):
        ops.embedding_forward(np.zeros(4, np.float32), np.array([0]))
    with pytest.raises(ValueError, match=r"weight must be 2-D"):
        ops.embedding_forward(np.zeros((4, 3, 1), np.float32), np.array([0]))
    with pytest.raises(TypeError, match=r"embedding: weight must be float32 or float64, got int64"):
        ops.embedding_forward(np.zeros((4, 3), np.int64), np.array([0]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 0\)"):
        ops.embedding_forward(np.zeros((0, 3), np.float32), np.array([0]))


def test_registry_rejects_bad_backward_inputs():
    dy, idx = np.zeros((2, 3), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match=r"embedding_backward: indices must lie in \[0, 1\), got values from 0 to 1"):
        ops.embedding_backward(dy, idx, 1)
    with pytest.raises(ValueError, match=r"embedding_backward: grad_output must have shape indices.shape \+ \(embedding_dim,\)"):
        ops.embedding_backward(np.zeros((3, 3), np.float32), idx, 2)
    with pytest.raises(ValueError, match=r"grad_output must have shape"):
        ops.embedding_backward(np.zeros(2, np.float32), idx, 2)
    for bad in (-1, 2.0, True, "2", None):
        with pytest.raises(ValueError, match=r"embedding_backward: num_classes must be a non-negative int"):
            ops.embedding_backward(dy, idx, bad)
    with pytest.raises(TypeError, match=r"embedding_backward: indices must be an integer array of class indices"):
        ops.embedding_backward(dy, idx.astype(np.float32), 2)
    with pytest.raises(TypeError, match=r"embedding_backward: grad_output must be float32 or float64"):
        ops.embedding_backward(dy.astype(np.int32), idx, 2)
    assert ops.embedding_backward(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), 0).shape == (0, 3)


# -- F.embedding, nn.Embedding ---------------------------------------------------------------------


def test_functional_embedding_gradient_goes_to_the_weight_only():
    rng = np.random.default_rng(6)
    w = pygan.tensor(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)
    idx = pygan.tensor(np.array([[1, 4], [1, 1]]))
    assert idx.dtype == np.int64 and not idx.requires_grad
    y = F.embedding(idx, w)
    assert y.shape == (2, 2, 3) and y.requires_grad
    c = rng.standard_normal((2, 2, 3)).astype(np.float32)
    (y * pygan.tensor(c)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), R.embedding_backward(c, idx.numpy(), 5), rtol=1e-6)
    assert idx.grad is None
    # a plain array of indices works the same; no graph without a weight that needs a gradient
    np.testing.assert_array_equal(F.embedding(idx.numpy(), w).numpy(), y.numpy())
    assert not F.embedding(idx, w.detach()).requires_grad


def test_functional_embedding_rejects_bad_inputs():
    w = pygan.tensor(np.zeros((3, 2), np.float32), requires_grad=True)
    with pytest.raises(TypeError, match=r"embedding: input must be a Tensor or array of integer indices, got list"):
        F.embedding([0, 1], w)
    with pytest.raises(TypeError, match=r"embedding: weight must be a pygan Tensor"):
        F.embedding(np.array([0]), np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match=r"indices must be an integer array"):
        F.embedding(pygan.tensor(np.array([0.0])), w)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        F.embedding(np.array([3]), w)


def test_embedding_grad_function_is_differentiable():
    """EmbeddingGrad (the double backward's building block): embedding_backward, its backward the lookup."""
    rng = np.random.default_rng(7)
    idx = np.array([2, 0, 2])
    dy = pygan.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    dw = F.EmbeddingGrad(idx, 3)(dy)
    np.testing.assert_allclose(dw.numpy(), R.embedding_backward(dy.numpy(), idx, 3), rtol=1e-12)
    g = rng.standard_normal((3, 4))
    (dw * pygan.tensor(g)).sum().backward()
    np.testing.assert_array_equal(dy.grad.numpy(), g[idx])
    # its own backward_graph (third order through F.embedding): create_graph through it
    check_double_backward(lambda d: F.tanh(F.EmbeddingGrad(idx, 3)(d)), (rng.standard_normal((3, 4)),), rng=rng)


@settings(max_examples=10, deadline=None)
@given(case=cases(), seed=seeds)
def test_double_backward(case, seed):
    """create_graph through F.embedding (tanh after it, so the first gradient depends on the weight):
    second derivatives in the weight and the output cotangent against finite differences."""
    num_classes, dim, index_shape = case
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num_classes, index_shape)
    check_double_backward(lambda w: F.tanh(F.embedding(idx, w)), (rng.standard_normal((num_classes, dim)),), rng=rng)


def test_double_backward_of_a_gradient_penalty():
    """|d out / d w|^2 differentiated again, through EmbeddingGrad and the lookup (a penalty's path)."""
    rng = np.random.default_rng(8)
    idx = pygan.tensor(np.array([1, 1, 3]))
    w = pygan.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    (gw,) = pygan.grad(F.tanh(F.embedding(idx, w)).sum(), [w], create_graph=True)
    (gw * gw).sum().backward()
    # by hand: gw[c] = sum_{i: idx_i = c} (1 - tanh(w_c)^2); d/dw_c of gw_c^2 = 2 gw_c * m_c * (-2 tanh t')
    t = np.tanh(w.numpy())
    m = np.bincount(idx.numpy(), minlength=4)[:, None]
    g = m * (1 - t * t)
    np.testing.assert_allclose(gw.numpy(), g, rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), 2 * g * m * (-2 * t * (1 - t * t)), rtol=1e-10, atol=1e-14)


def test_module_names_init_and_state_dict():
    pygan.manual_seed(0)
    emb = nn.Embedding(1000, 64)
    assert repr(emb) == "Embedding(1000, 64)"
    assert [name for name, _ in emb.named_parameters()] == ["weight"] and list(emb.state_dict()) == ["weight"]
    w = emb.weight.numpy()
    assert w.shape == (1000, 64) and w.dtype == np.float32 and emb.weight.requires_grad
    # N(0, 1), as torch.nn.Embedding: 64000 draws, so mean and std are within a few 1e-2 of 0 and 1
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02
    pygan.manual_seed(0)
    np.testing.assert_array_equal(nn.Embedding(1000, 64).weight.numpy(), w)  # seeded by manual_seed
    other = nn.Embedding(1000, 64)
    other.load_state_dict(emb.state_dict())
    np.testing.assert_array_equal(other.weight.numpy(), w)
    for bad in ((0, 4), (4, 0), (2.0, 4), (4, True)):
        with pytest.raises(ValueError, match=r"Embedding: (num_embeddings|embedding_dim) must be a positive int"):
            nn.Embedding(*bad)


def test_module_forward_and_training_step():
    pygan.manual_seed(1)
    emb = nn.Embedding(10, 4)
    labels = pygan.tensor(np.array([3, 3, 7]))
    before = emb.weight.numpy().copy()
    out = emb(labels)
    np.testing.assert_array_equal(out.numpy(), before[[3, 3, 7]])
    out.sum().backward()
    expected = np.zeros((10, 4), np.float32)
    expected[3], expected[7] = 2, 1
    np.testing.assert_array_equal(emb.weight.grad.numpy(), expected)
    opt = pygan.optim.Adam(emb.parameters(), lr=0.1)
    opt.step()
    changed = np.any(emb.weight.numpy() != before, axis=1)
    assert changed.tolist() == [i in (3, 7) for i in range(10)]  # Adam leaves zero-gradient rows alone
