// Issue 5 bindings: conv2d (csrc/conv2d.cu) and batch norm (csrc/batchnorm.cu) launchers.
// Included by bindings.cpp only (after its array helpers, inside PYGAN_HAVE_KERNELS); it follows
// that file's rules: validate every argument (array_arg, shapes against each other) before a
// launcher touches memory, raise ValueError naming the argument, release the GIL for the launch.
// Python-side wrappers (output allocation, conv-transpose wiring): pygan/ops/native_conv_bn.py.
#pragma once

namespace {

// Largest stride, padding or kernel extent taken: far beyond any real layer, small enough that no
// size computed from it (h + 2 * padding, output extents, their products) can overflow int64.
constexpr std::int64_t kMaxGeometry = std::int64_t(1) << 24;

// One int argument: a Python int (or numpy integer), not a bool, not a float, not a string.
std::int64_t strict_int(py::handle v, const std::string& op, const std::string& name, const char* what) {
  if (py::isinstance<py::bool_>(v) || !py::hasattr(v, "__index__") || py::isinstance<py::float_>(v))
    bad(op, name, what);
  try {
    return py::reinterpret_borrow<py::object>(v).attr("__index__")().cast<std::int64_t>();
  } catch (const py::cast_error&) {
    bad(op, name, std::string(what) + " (out of range)");
  }
}

std::pair<std::int64_t, std::int64_t> int_pair(py::handle v, const std::string& op, const std::string& name,
                                               std::int64_t minimum) {
  const char* what = "must be an int or a pair of ints";
  std::int64_t a = 0, b = 0;
  if (py::isinstance<py::tuple>(v) || py::isinstance<py::list>(v)) {
    const py::sequence s = py::reinterpret_borrow<py::sequence>(v);
    if (s.size() != 2) bad(op, name, what);
    a = strict_int(s[0], op, name, what);
    b = strict_int(s[1], op, name, what);
  } else {
    a = b = strict_int(v, op, name, what);  // a str, bytes, float, bool, None or other object fails here
  }
  if (a < minimum || b < minimum) bad(op, name, "must be >= " + std::to_string(minimum));
  if (a > kMaxGeometry || b > kMaxGeometry) bad(op, name, "must be <= " + std::to_string(kMaxGeometry));
  return {a, b};
}

void ndim4(const std::string& op, const Array& a, const std::string& name) {
  if (a.shape.size() != 4) bad(op, name, "must be 4-D, got shape " + shape_str(a.shape));
}

// The full shape of a conv2d from x (n,c,h,w) and w (o,c,kh,kw); checks y (n,o,oh,ow) against it.
pygan::Conv2dShape conv_shape(const std::string& op, const Array& x, const std::string& x_name, const Array& w,
                              const Array& y, const std::string& y_name, py::handle stride, py::handle padding) {
  ndim4(op, x, x_name);
  ndim4(op, w, "w");
  ndim4(op, y, y_name);
  const auto [sh, sw] = int_pair(stride, op, "stride", 1);
  const auto [ph, pw] = int_pair(padding, op, "padding", 0);
  pygan::Conv2dShape s{x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[2], w.shape[3],
                       0, 0, sh, sw, ph, pw};
  if (w.shape[1] != s.c)
    bad(op, "w", "has shape " + shape_str(w.shape) + " but " + x_name + " has " + std::to_string(s.c) + " channels");
  if (s.kh > s.h + 2 * ph || s.kw > s.w + 2 * pw)
    bad(op, "w", "kernel is larger than the padded input (" + x_name + " shape " + shape_str(x.shape) + ")");
  s.oh = (s.h + 2 * ph - s.kh) / sh + 1;
  s.ow = (s.w + 2 * pw - s.kw) / sw + 1;
  const std::vector<std::int64_t> expected{s.n, s.o, s.oh, s.ow};
  if (y.shape != expected) bad(op, y_name, "has shape " + shape_str(y.shape) + ", expected " + shape_str(expected));
  return s;
}

Array optional_arg(py::handle obj, const std::string& op, const std::string& name, bool output = false) {
  if (obj.is_none()) return Array{};
  return array_arg(obj, op, name, output);
}

void channel_vector(const std::string& op, const Array& a, const std::string& name, std::int64_t c) {
  if (a.ptr == 0 && a.shape.empty()) return;  // None
  if (a.shape != std::vector<std::int64_t>{c})
    bad(op, name, "must have shape (" + std::to_string(c) + ",), got " + shape_str(a.shape));
}

void def_conv_batchnorm(py::module_& m, py::dict& variants) {
  m.def("conv2d_variants", &pygan::conv2d_variants, "Names of the conv2d kernel variants (1-based).");
  variants["conv2d"] = pygan::conv2d_variants();
  m.def("batch_norm_variants", &pygan::batch_norm_variants, "Names of the batch-norm kernel variants (1-based).");
  variants["batch_norm"] = pygan::batch_norm_variants();

  m.def(
      "conv2d_forward",
      [](py::handle x, py::handle w, py::handle b, py::handle y, py::handle stride, py::handle padding, int variant,
         std::uintptr_t stream) {
        const std::string op = "conv2d_forward";
        const Array ax = array_arg(x, op, "x"), aw = array_arg(w, op, "w"), ay = array_arg(y, op, "y", true);
        const Array ab = optional_arg(b, op, "b");
        const pygan::Conv2dShape s = conv_shape(op, ax, "x", aw, ay, "y", stride, padding);
        channel_vector(op, ab, "b", s.o);
        py::gil_scoped_release release;
        pygan::conv2d_forward(ax.data(), aw.data(), b.is_none() ? nullptr : ab.data(), ay.data(), s, variant, stream);
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("stride"), py::arg("padding"),
      py::arg("variant") = 0, py::arg("stream") = 0, "y = conv2d(x, w) + b into the preallocated y; b may be None.");
  m.def(
      "conv2d_backward_data",
      [](py::handle dy, py::handle w, py::handle dx, py::handle stride, py::handle padding, int variant,
         std::uintptr_t stream) {
        const std::string op = "conv2d_backward_data";
        const Array ady = array_arg(dy, op, "dy"), aw = array_arg(w, op, "w"), adx = array_arg(dx, op, "dx", true);
        const pygan::Conv2dShape s = conv_shape(op, adx, "dx", aw, ady, "dy", stride, padding);
        py::gil_scoped_release release;
        pygan::conv2d_backward_data(ady.data(), aw.data(), adx.data(), s, variant, stream);
      },
      py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("stride"), py::arg("padding"), py::arg("variant") = 0,
      py::arg("stream") = 0, "dx (preallocated, its shape gives the input size) = conv2d's input gradient of dy.");
  m.def(
      "conv2d_backward_weight_workspace_size",
      [](std::vector<std::int64_t> x_shape, std::vector<std::int64_t> w_shape, py::handle stride, py::handle padding,
         int variant) {
        const std::string op = "conv2d_backward_weight_workspace_size";
        if (x_shape.size() != 4 || w_shape.size() != 4) bad(op, "x_shape/w_shape", "must have 4 entries");
        for (const auto* v : {&x_shape, &w_shape}) {  // the shape of an array that could exist
          std::int64_t nonzero = 1;
          for (const std::int64_t d : *v) {
            if (d < 0 || (d > 0 && nonzero > (std::int64_t(1) << 56) / d))
              bad(op, v == &x_shape ? "x_shape" : "w_shape", "is not the shape of an array: " + shape_str(*v));
            if (d > 0) nonzero *= d;
          }
        }
        if (w_shape[1] != x_shape[1])
          bad(op, "w_shape", "has " + std::to_string(w_shape[1]) + " input channels but x_shape has " +
                                 std::to_string(x_shape[1]));
        const auto [sh, sw] = int_pair(stride, op, "stride", 1);
        const auto [ph, pw] = int_pair(padding, op, "padding", 0);
        pygan::Conv2dShape s{x_shape[0], x_shape[1], x_shape[2], x_shape[3], w_shape[0], w_shape[2], w_shape[3],
                             0, 0, sh, sw, ph, pw};
        if (s.kh > s.h + 2 * ph || s.kw > s.w + 2 * pw) bad(op, "w_shape", "kernel is larger than the padded input");
        s.oh = (s.h + 2 * ph - s.kh) / sh + 1;
        s.ow = (s.w + 2 * pw - s.kw) / sw + 1;
        return pygan::conv2d_backward_weight_workspace_size(s, variant);
      },
      py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"), py::arg("padding"), py::arg("variant") = 0,
      "Floats of workspace conv2d_backward_weight needs (0: pass None).");
  m.def(
      "conv2d_backward_weight",
      [](py::handle x, py::handle dy, py::handle dw, py::handle workspace, py::handle stride, py::handle padding,
         int variant, std::uintptr_t stream) {
        const std::string op = "conv2d_backward_weight";
        const Array ax = array_arg(x, op, "x"), ady = array_arg(dy, op, "dy"), adw = array_arg(dw, op, "dw", true);
        const Array ws = optional_arg(workspace, op, "workspace", true);
        const pygan::Conv2dShape s = conv_shape(op, ax, "x", adw, ady, "dy", stride, padding);
        const std::int64_t need = pygan::conv2d_backward_weight_workspace_size(s, variant);
        if (need > 0 && ws.size < need)
          bad(op, "workspace", "must hold at least " + std::to_string(need) + " floats (conv2d_backward_weight_workspace_size)");
        py::gil_scoped_release release;
        pygan::conv2d_backward_weight(ax.data(), ady.data(), adw.data(), need > 0 ? ws.data() : nullptr, s, variant,
                                      stream);
      },
      py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("workspace"), py::arg("stride"), py::arg("padding"),
      py::arg("variant") = 0, py::arg("stream") = 0, "dw (preallocated, its shape gives the kernel) of conv2d.");
  m.def(
      "conv2d_bias_backward",
      [](py::handle dy, py::handle db, std::uintptr_t stream) {
        const std::string op = "conv2d_bias_backward";
        const Array ady = array_arg(dy, op, "dy"), adb = array_arg(db, op, "db", true);
        ndim4(op, ady, "dy");
        channel_vector(op, adb, "db", ady.shape[1]);
        py::gil_scoped_release release;
        pygan::conv2d_bias_backward(ady.data(), adb.data(), ady.shape[0], ady.shape[1], ady.shape[2] * ady.shape[3],
                                    stream);
      },
      py::arg("dy"), py::arg("db"), py::arg("stream") = 0, "db = dy.sum((0, 2, 3)), deterministic.");

  m.def(
      "batch_norm_workspace_size",
      [](std::vector<std::int64_t> x_shape, int variant) {
        const std::string op = "batch_norm_workspace_size";
        if (x_shape.size() < 2) bad(op, "x_shape", "must have at least 2 entries (N, C, ...), got " + shape_str(x_shape));
        std::int64_t nonzero = 1, size = 1;
        for (const std::int64_t d : x_shape) {  // the shape of an array that could exist
          if (d < 0 || (d > 0 && nonzero > (std::int64_t(1) << 56) / d))
            bad(op, "x_shape", "is not the shape of an array: " + shape_str(x_shape));
          if (d > 0) nonzero *= d;
          size *= d;
        }
        const std::int64_t n = x_shape[0], c = x_shape[1], sp = n > 0 && c > 0 ? size / (n * c) : 0;
        return pygan::batch_norm_workspace_size(n, c, sp, variant);
      },
      py::arg("x_shape"), py::arg("variant") = 0,
      "Floats of workspace batch_norm_forward/backward need for x of this shape (0: pass None).");
  m.def(
      "batch_norm_forward",
      [](py::handle x, py::handle gamma, py::handle beta, py::handle running_mean, py::handle running_var, py::handle y,
         py::handle mean, py::handle rstd, bool training, float momentum, float eps, int act, float slope, int variant,
         std::uintptr_t stream, py::handle workspace) {
        const std::string op = "batch_norm_forward";
        const Array ax = array_arg(x, op, "x"), ay = array_arg(y, op, "y", true);
        const Array am = array_arg(mean, op, "mean", true), ar = array_arg(rstd, op, "rstd", true);
        const Array ag = optional_arg(gamma, op, "gamma"), ab = optional_arg(beta, op, "beta");
        const Array arm = optional_arg(running_mean, op, "running_mean", true);
        const Array arv = optional_arg(running_var, op, "running_var", true);
        if (ax.shape.size() < 2) bad(op, "x", "must be at least 2-D (N, C, ...), got " + shape_str(ax.shape));
        same_shape(op, ax, "x", ay, "y");
        const std::int64_t n = ax.shape[0], c = ax.shape[1], sp = n > 0 && c > 0 ? ax.size / (n * c) : 0;
        channel_vector(op, am, "mean", c);
        channel_vector(op, ar, "rstd", c);
        channel_vector(op, ag, "gamma", c);
        channel_vector(op, ab, "beta", c);
        channel_vector(op, arm, "running_mean", c);
        channel_vector(op, arv, "running_var", c);
        if (!training && (running_mean.is_none() || running_var.is_none()))
          bad(op, "running_mean/running_var", "are required when training is False");
        if (training && n * sp < 2) bad(op, "x", "needs more than one value per channel when training");
        if (!(eps > 0)) bad(op, "eps", "must be positive");
        const Array aws = workspace_arg(workspace, op, pygan::batch_norm_workspace_size(n, c, sp, variant));
        auto ptr = [](py::handle o, const Array& a) { return o.is_none() ? nullptr : a.data(); };
        py::gil_scoped_release release;
        pygan::batch_norm_forward(ax.data(), ptr(gamma, ag), ptr(beta, ab), ptr(running_mean, arm),
                                  ptr(running_var, arv), ay.data(), am.data(), ar.data(), n, c, sp, training,
                                  momentum, eps, act, slope, variant, stream, aws.size > 0 ? aws.data() : nullptr);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"), py::arg("y"),
      py::arg("mean"), py::arg("rstd"), py::arg("training").noconvert(), py::arg("momentum"), py::arg("eps"), py::arg("act") = 0,
      py::arg("negative_slope") = 0.0f, py::arg("variant") = 0, py::arg("stream") = 0, py::arg("workspace") = py::none(),
      "y = act(batch_norm(x)) over axis 1; writes mean, rstd; act 0 = none, 1 = leaky ReLU; workspace: "
      "batch_norm_workspace_size(x.shape, variant) floats (or None when that is 0).");
  m.def(
      "batch_norm_backward",
      [](py::handle x, py::handle gamma, py::handle beta, py::handle dy, py::handle mean, py::handle rstd,
         py::handle dx, py::handle dgamma, py::handle dbeta, bool training, int act, float slope, int variant,
         std::uintptr_t stream, py::handle workspace) {
        const std::string op = "batch_norm_backward";
        const Array ax = array_arg(x, op, "x"), ady = array_arg(dy, op, "dy"), adx = array_arg(dx, op, "dx", true);
        const Array am = array_arg(mean, op, "mean"), ar = array_arg(rstd, op, "rstd");
        const Array ag = optional_arg(gamma, op, "gamma"), ab = optional_arg(beta, op, "beta");
        const Array adg = optional_arg(dgamma, op, "dgamma", true), adb = optional_arg(dbeta, op, "dbeta", true);
        if (ax.shape.size() < 2) bad(op, "x", "must be at least 2-D (N, C, ...), got " + shape_str(ax.shape));
        same_shape(op, ax, "x", ady, "dy");
        same_shape(op, ax, "x", adx, "dx");
        const std::int64_t n = ax.shape[0], c = ax.shape[1], sp = n > 0 && c > 0 ? ax.size / (n * c) : 0;
        for (const auto& [a, name] : {std::pair<const Array*, const char*>{&am, "mean"}, {&ar, "rstd"}, {&ag, "gamma"},
                                      {&ab, "beta"}, {&adg, "dgamma"}, {&adb, "dbeta"}})
          channel_vector(op, *a, name, c);
        if (act != 0 && !gamma.is_none() && beta.is_none()) bad(op, "beta", "is needed with gamma for a fused activation");
        const Array aws = workspace_arg(workspace, op, pygan::batch_norm_workspace_size(n, c, sp, variant));
        auto ptr = [](py::handle o, const Array& a) { return o.is_none() ? nullptr : a.data(); };
        py::gil_scoped_release release;
        pygan::batch_norm_backward(ax.data(), ptr(gamma, ag), ptr(beta, ab), ady.data(), am.data(), ar.data(),
                                   adx.data(), ptr(dgamma, adg), ptr(dbeta, adb), n, c, sp, training, act, slope,
                                   variant, stream, aws.size > 0 ? aws.data() : nullptr);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("dy"), py::arg("mean"), py::arg("rstd"), py::arg("dx"),
      py::arg("dgamma"), py::arg("dbeta"), py::arg("training").noconvert(), py::arg("act") = 0, py::arg("negative_slope") = 0.0f,
      py::arg("variant") = 0, py::arg("stream") = 0, py::arg("workspace") = py::none(),
      "dx (and dgamma, dbeta when not None) of act(batch_norm(x)); beta is read only for a fused activation; "
      "workspace as batch_norm_forward's.");
}

}  // namespace
