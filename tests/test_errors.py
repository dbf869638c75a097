"""Bad input gets a ValueError or TypeError that names the argument and the shapes."""

import numpy as np
import pytest

import pygan
from pygan import nn, ops
from pygan.nn import functional as F


def t(*shape, dtype=np.float32):
    return pygan.tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype))


def test_wrong_ndim():
    with pytest.raises(ValueError, match=r"input must be 4-D.*\(3, 8, 8\)"):
        F.conv2d(t(3, 8, 8), t(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        F.conv_transpose2d(t(1, 3, 8, 8), t(3, 4, 3))
    with pytest.raises(ValueError, match="BatchNorm2d: expected 4-D"):
        nn.BatchNorm2d(3)(t(4, 3))


def test_channel_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"input has 2 channels but weight expects 3.*\(1, 2, 8, 8\).*\(4, 3, 3, 3\)"):
        F.conv2d(t(1, 2, 8, 8), t(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"input has 2 channels but weight expects 3"):
        F.conv_transpose2d(t(1, 2, 8, 8), t(3, 4, 3, 3))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.batch_norm(t(2, 3, 4, 4), None, None, t(4), t(3), training=True)


def test_integer_dtype_is_rejected():
    x = pygan.tensor(np.ones((1, 1, 4, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="input must be float32 or float64, got int64"):
        F.conv2d(x, t(1, 1, 3, 3))
    with pytest.raises(TypeError, match="int"):
        F.leaky_relu(pygan.tensor([1, 2]))
    with pytest.raises(TypeError, match="floating-point"):
        pygan.tensor([1, 2], requires_grad=True)


def test_mixed_float_dtypes_are_rejected():
    with pytest.raises(TypeError, match="weight is float64 but input is float32"):
        F.conv2d(t(1, 1, 4, 4), t(1, 1, 3, 3, dtype=np.float64))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"kernel 5x5 is larger than the padded input 4x4"):
        F.conv2d(t(1, 1, 4, 4), t(1, 1, 5, 5))
    F.conv2d(t(1, 1, 4, 4), t(1, 1, 5, 5), padding=1)  # fits once padded


@pytest.mark.parametrize("stride", [0, -1, (1, 0)])
def test_stride_must_be_positive(stride):
    with pytest.raises(ValueError, match="stride must be >= 1"):
        F.conv2d(t(1, 1, 4, 4), t(1, 1, 3, 3), stride=stride)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        nn.ConvTranspose2d(1, 1, 3, stride=stride)


def test_bad_padding_and_output_padding():
    with pytest.raises(ValueError, match="padding must be >= 0"):
        F.conv2d(t(1, 1, 4, 4), t(1, 1, 3, 3), padding=-1)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(t(1, 1, 4, 4), t(1, 1, 3, 3), stride=2, output_padding=2)


def test_gradient_of_wrong_shape():
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"grad_output has shape \(1, 1, 3, 3\), expected \(1, 1, 2, 2\)"):
        ops.conv2d_backward(x, w, np.ones((1, 1, 3, 3), np.float32), 1, 0, False)
    with pytest.raises(ValueError, match="grad_output has shape"):
        ops.leaky_relu_backward(x, np.ones((2, 2), np.float32), 0.2)
    y = F.tanh(pygan.tensor(x, requires_grad=True))
    with pytest.raises(ValueError, match="gradient has shape"):
        y.backward(np.ones((1, 1, 4, 5), np.float32))


def test_bce_target_shape_must_match():
    with pytest.raises(ValueError, match=r"target shape \(3,\) must equal input shape \(4,\)"):
        F.binary_cross_entropy_with_logits(t(4), t(3))


def test_mixing_devices_is_an_error():
    class FakeCuda(pygan.Tensor):
        device = property(lambda self: "cuda")

    with pytest.raises(ValueError, match="different devices"):
        F.conv2d(t(1, 1, 4, 4), FakeCuda(np.ones((1, 1, 3, 3), np.float32)))


def test_non_tensor_arguments_are_named():
    with pytest.raises(TypeError, match="conv2d: weight must be a pygan Tensor"):
        F.conv2d(t(1, 1, 4, 4), np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        nn.Conv2d(0, 3, 3)


def test_nan_propagates_through_every_op():
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    xt = pygan.tensor(x)
    assert np.isnan(F.conv2d(xt, t(1, 2, 3, 3)).numpy()).any()
    assert np.isnan(F.conv_transpose2d(xt, t(2, 1, 3, 3)).numpy()).any()
    assert np.isnan(F.batch_norm(xt, None, None, training=True).numpy()[:, 0]).all()
    for fn in (F.leaky_relu, F.relu, F.tanh, F.sigmoid):
        assert np.isnan(fn(xt).numpy()[0, 0, 1, 1])
    assert np.isnan(F.binary_cross_entropy_with_logits(xt, pygan.zeros(*x.shape)).item())
