// Issue 6 bindings: avg_pool2d (csrc/pool.cu) and softmax cross-entropy (csrc/loss.cu) launchers.
// Included by bindings.cpp only (after bindings_conv_bn.h, whose int_pair/ndim4 it uses, inside
// PYGAN_HAVE_KERNELS); it follows that file's rules: validate every argument (array_arg, shapes
// against each other) before a launcher touches memory, raise ValueError naming the argument,
// release the GIL for the launch. linear has no binding of its own: it is conv2d with 1x1 kernels
// (pygan/ops/native_conv_bn.py). Python-side wrappers: pygan/ops/native.py.
#pragma once

namespace {

// The full shape of an avg_pool2d from its input x (n,c,h,w); checks y (n,c,oh,ow) against it.
pygan::Pool2dShape pool_shape(const std::string& op, const Array& x, const std::string& x_name, const Array& y,
                              const std::string& y_name, py::handle kernel_size, py::handle stride) {
  ndim4(op, x, x_name);
  ndim4(op, y, y_name);
  const auto [kh, kw] = int_pair(kernel_size, op, "kernel_size", 1);
  const auto [sh, sw] = int_pair(stride, op, "stride", 1);
  pygan::Pool2dShape s{x.shape[0], x.shape[1], x.shape[2], x.shape[3], kh, kw, sh, sw, 0, 0};
  if (kh > s.h || kw > s.w)
    bad(op, "kernel_size", "(" + std::to_string(kh) + ", " + std::to_string(kw) + ") is larger than the input (" +
                               x_name + " shape " + shape_str(x.shape) + ")");
  s.oh = (s.h - kh) / sh + 1;
  s.ow = (s.w - kw) / sw + 1;
  const std::vector<std::int64_t> expected{s.n, s.c, s.oh, s.ow};
  if (y.shape != expected) bad(op, y_name, "has shape " + shape_str(y.shape) + ", expected " + shape_str(expected));
  return s;
}

// logits (rows, classes), non-empty, and labels (rows,) int64; returns {rows, classes}.
std::pair<std::int64_t, std::int64_t> ce_shape(const std::string& op, const Array& logits, const Array& labels) {
  if (logits.shape.size() != 2) bad(op, "logits", "must be 2-D (N, num_classes), got shape " + shape_str(logits.shape));
  if (logits.size == 0) bad(op, "logits", "is empty (shape " + shape_str(logits.shape) + ")");
  const std::int64_t rows = logits.shape[0], classes = logits.shape[1];
  if (labels.shape != std::vector<std::int64_t>{rows})
    bad(op, "labels", "must have shape (" + std::to_string(rows) + ",), got " + shape_str(labels.shape));
  return {rows, classes};
}

void def_pool_softmax(py::module_& m, py::dict& variants) {
  // ---- pool.cu ----
  m.def("avg_pool2d_variants", &pygan::avg_pool2d_variants, "Names of the avg_pool2d kernel variants (1-based).");
  variants["avg_pool2d"] = pygan::avg_pool2d_variants();
  m.def(
      "avg_pool2d_forward",
      [](py::handle x, py::handle y, py::handle kernel_size, py::handle stride, int variant, std::uintptr_t stream) {
        const std::string op = "avg_pool2d_forward";
        const Array ax = array_arg(x, op, "x"), ay = array_arg(y, op, "y", true);
        const pygan::Pool2dShape s = pool_shape(op, ax, "x", ay, "y", kernel_size, stride);
        py::gil_scoped_release release;
        pygan::avg_pool2d_forward(ax.data(), ay.data(), s, variant, stream);
      },
      py::arg("x"), py::arg("y"), py::arg("kernel_size"), py::arg("stride"), py::arg("variant") = 0,
      py::arg("stream") = 0, "y = avg_pool2d(x) (no padding) into the preallocated y (N, C, OH, OW).");
  m.def(
      "avg_pool2d_backward",
      [](py::handle dy, py::handle dx, py::handle kernel_size, py::handle stride, int variant, std::uintptr_t stream) {
        const std::string op = "avg_pool2d_backward";
        const Array ady = array_arg(dy, op, "dy"), adx = array_arg(dx, op, "dx", true);
        const pygan::Pool2dShape s = pool_shape(op, adx, "dx", ady, "dy", kernel_size, stride);
        py::gil_scoped_release release;
        pygan::avg_pool2d_backward(ady.data(), adx.data(), s, variant, stream);
      },
      py::arg("dy"), py::arg("dx"), py::arg("kernel_size"), py::arg("stride"), py::arg("variant") = 0,
      py::arg("stream") = 0, "dx (preallocated; its shape is the input's) = avg_pool2d's input gradient of dy.");

  // ---- loss.cu: softmax cross-entropy (the "loss" family's variants) ----
  m.def(
      "softmax_cross_entropy_workspace_size",
      [](std::int64_t rows, int variant) {
        if (rows < 0) bad("softmax_cross_entropy_workspace_size", "rows", "must be >= 0, got " + std::to_string(rows));
        return pygan::softmax_cross_entropy_workspace_size(rows, variant);
      },
      py::arg("rows"),
        py::arg("variant") = 0,
        "float32 elements of scratch space softmax_cross_entropy_forward needs for `rows` rows (0: pass None).");
  m.def(
      "softmax_cross_entropy_forward",
      [](py::handle logits, py::handle labels, py::handle workspace, py::handle loss, int variant,
         std::uintptr_t stream) {
        const std::string op = "softmax_cross_entropy_forward";
        const Array ax = array_arg(logits, op, "logits"), al = array_arg(labels, op, "labels", false, kInt64);
        const Array aloss = array_arg(loss, op, "loss", true);
        const auto [rows, classes] = ce_shape(op, ax, al);
        one_element(op, aloss, "loss");
        const Array aws = workspace_arg(workspace, op, pygan::softmax_cross_entropy_workspace_size(rows, variant));
        py::gil_scoped_release release;
        pygan::softmax_cross_entropy_forward(ax.data(), al.i64(), aws.data(), aloss.data(), rows, classes, variant,
                                             stream);
      },
      py::arg("logits"), py::arg("labels"), py::arg("workspace"), py::arg("loss"), py::arg("variant") = 0,
      py::arg("stream") = 0,
      "loss[()] = mean over rows of logsumexp(logits[r]) - logits[r, labels[r]]; labels int64 (N,); workspace has "
      "softmax_cross_entropy_workspace_size(N, variant) floats (or is None). A label outside [0, num_classes) is "
      "not read through: its row makes the loss NaN (labels live in device memory, so they are not checked here).");
  m.def(
      "softmax_cross_entropy_backward",
      [](py::handle logits, py::handle labels, py::handle dloss, py::handle dlogits, int variant,
         std::uintptr_t stream) {
        const std::string op = "softmax_cross_entropy_backward";
        const Array ax = array_arg(logits, op, "logits"), al = array_arg(labels, op, "labels", false, kInt64);
        const Array ag = array_arg(dloss, op, "dloss"), adx = array_arg(dlogits, op, "dlogits", true);
        const auto [rows, classes] = ce_shape(op, ax, al);
        same_shape(op, ax, "logits", adx, "dlogits");
        one_element(op, ag, "dloss");
        py::gil_scoped_release release;
        pygan::softmax_cross_entropy_backward(ax.data(), al.i64(), ag.data(), adx.data(), rows, classes, variant,
                                              stream);
      },
      py::arg("logits"), py::arg("labels"), py::arg("dloss"), py::arg("dlogits"), py::arg("variant") = 0,
      py::arg("stream") = 0,
      "dlogits = (softmax(logits) - onehot(labels)) * dloss / N; dloss is a one-element array. A label outside "
      "[0, num_classes) gives a NaN gradient row, never an out-of-bounds read.");
}

}  // namespace
