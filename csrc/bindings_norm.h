// Issue 11 bindings: group norm (csrc/groupnorm.cu) and RMSprop (csrc/rmsprop.cu) launchers.
// Included by bindings.cpp only (after bindings_conv_bn.h, whose optional_arg/channel_vector it
// uses, inside PYGAN_HAVE_KERNELS); it follows that file's rules: validate every argument
// (array_arg, shapes against each other, sizes and hyper-parameters) before a launcher touches
// memory, raise ValueError naming the argument, release the GIL for the launch.
// Python-side wrappers (output allocation): pygan/ops/native.py.
#pragma once

#include <tuple>

namespace {

// n, c, m of an (N, C, ...) array for group norm with `groups` groups; checks groups and sizes.
std::tuple<std::int64_t, std::int64_t, std::int64_t> group_norm_sizes(const std::string& op, const Array& x,
                                                                      std::int64_t groups) {
  if (x.shape.size() < 2) bad(op, "x", "must be at least 2-D (N, C, ...), got " + shape_str(x.shape));
  std::int64_t m = 1;
  for (std::size_t d = 2; d < x.shape.size(); ++d) m *= x.shape[d];
  const std::int64_t n = x.shape[0], c = x.shape[1];
  if (groups < 1) bad(op, "num_groups", "must be >= 1, got " + std::to_string(groups));
  if (c < 1 || m < 1) bad(op, "x", "has no values per group, shape " + shape_str(x.shape));
  if (c % groups != 0)
    bad(op, "num_groups", std::to_string(groups) + " does not divide the " + std::to_string(c) + " channels of x");
  return {n, c, m};
}

void stats_shape(const std::string& op, const Array& a, const std::string& name, std::int64_t n, std::int64_t groups) {
  const std::vector<std::int64_t> expected{n, groups};
  if (a.shape != expected) bad(op, name, "must have shape " + shape_str(expected) + ", got " + shape_str(a.shape));
}

// The arrays of one optimiser list argument, each validated; `n` of them expected.
std::vector<Array> array_list(const py::sequence& seq, const std::string& op, const std::string& name, std::size_t n,
                              bool output) {
  if (seq.size() != n) bad(op, name, "has " + std::to_string(seq.size()) + " arrays but params has " + std::to_string(n));
  std::vector<Array> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(array_arg(seq[i], op, name + "[" + std::to_string(i) + "]", output));
  return out;
}

void def_norm(py::module_& m, py::dict& variants) {
  m.def("group_norm_variants", &pygan::group_norm_variants, "Names of the group-norm kernel variants (1-based).");
  variants["group_norm"] = pygan::group_norm_variants();
  m.def("rmsprop_variants", &pygan::rmsprop_variants, "Names of the RMSprop kernel variants (1-based).");
  variants["rmsprop"] = pygan::rmsprop_variants();

  m.def(
      "group_norm_forward",
      [](py::handle x, py::handle gamma, py::handle beta, py::handle y, py::handle mean, py::handle rstd,
         std::int64_t num_groups, float eps, int variant, std::uintptr_t stream) {
        const std::string op = "group_norm_forward";
        const Array ax = array_arg(x, op, "x"), ay = array_arg(y, op, "y", true);
        const Array am = array_arg(mean, op, "mean", true), ar = array_arg(rstd, op, "rstd", true);
        const Array ag = optional_arg(gamma, op, "gamma"), ab = optional_arg(beta, op, "beta");
        const auto [n, c, sp] = group_norm_sizes(op, ax, num_groups);
        same_shape(op, ax, "x", ay, "y");
        stats_shape(op, am, "mean", n, num_groups);
        stats_shape(op, ar, "rstd", n, num_groups);
        channel_vector(op, ag, "gamma", c);
        channel_vector(op, ab, "beta", c);
        if (!(eps > 0)) bad(op, "eps", "must be positive");
        auto ptr = [](py::handle o, const Array& a) { return o.is_none() ? nullptr : a.data(); };
        py::gil_scoped_release release;
        pygan::group_norm_forward(ax.data(), ptr(gamma, ag), ptr(beta, ab), ay.data(), am.data(), ar.data(), n, c, sp,
                                  num_groups, eps, variant, stream);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("y"), py::arg("mean"), py::arg("rstd"),
      py::arg("num_groups"), py::arg("eps"), py::arg("variant") = 0, py::arg("stream") = 0,
      "y = group_norm(x) into the preallocated y; writes mean, rstd (N, num_groups); gamma/beta may be None.");
  m.def(
      "group_norm_backward",
      [](py::handle x, py::handle gamma, py::handle dy, py::handle mean, py::handle rstd, py::handle dx,
         py::handle dgamma, py::handle dbeta, std::int64_t num_groups, int variant, std::uintptr_t stream) {
        const std::string op = "group_norm_backward";
        const Array ax = array_arg(x, op, "x"), ady = array_arg(dy, op, "dy"), adx = array_arg(dx, op, "dx", true);
        const Array am = array_arg(mean, op, "mean"), ar = array_arg(rstd, op, "rstd");
        const Array ag = optional_arg(gamma, op, "gamma");
        const Array adg = optional_arg(dgamma, op, "dgamma", true), adb = optional_arg(dbeta, op, "dbeta", true);
        const auto [n, c, sp] = group_norm_sizes(op, ax, num_groups);
        same_shape(op, ax, "x", ady, "dy");
        same_shape(op, ax, "x", adx, "dx");
        stats_shape(op, am, "mean", n, num_groups);
        stats_shape(op, ar, "rstd", n, num_groups);
        channel_vector(op, ag, "gamma", c);
        channel_vector(op, adg, "dgamma", c);
        channel_vector(op, adb, "dbeta", c);
        if (gamma.is_none() && !(dgamma.is_none() && dbeta.is_none()))
          bad(op, "dgamma/dbeta", "must be None when gamma is None");
        auto ptr = [](py::handle o, const Array& a) { return o.is_none() ? nullptr : a.data(); };
        py::gil_scoped_release release;
        pygan::group_norm_backward(ax.data(), ptr(gamma, ag), ady.data(), am.data(), ar.data(), adx.data(),
                                   ptr(dgamma, adg), ptr(dbeta, adb), n, c, sp, num_groups, variant, stream);
      },
      py::arg("x"), py::arg("gamma"), py::arg("dy"), py::arg("mean"), py::arg("rstd"), py::arg("dx"),
      py::arg("dgamma"), py::arg("dbeta"), py::arg("num_groups"), py::arg("variant") = 0, py::arg("stream") = 0,
      "dx (and dgamma, dbeta when not None; only with gamma) of group_norm.");

  m.def(
      "rmsprop_step",
      [](py::sequence params, py::sequence grads, py::sequence square_avgs, py::sequence momentum_buffers,
         py::sequence grad_avgs, double lr, double alpha, double eps, double weight_decay, double momentum,
         bool centered, int variant, std::uintptr_t stream) {
        const std::string op = "rmsprop_step";
        for (const auto& [name, v] : {std::pair<const char*, double>{"lr", lr}, {"alpha", alpha}, {"eps", eps},
                                      {"weight_decay", weight_decay}, {"momentum", momentum}})
          if (!(v >= 0)) bad(op, name, "must be >= 0, got " + std::to_string(v));
        const std::size_t n = params.size();
        const bool has_momentum = momentum > 0;
        if (!has_momentum && momentum_buffers.size() != 0) bad(op, "momentum_buffers", "must be empty when momentum == 0");
        if (!centered && grad_avgs.size() != 0) bad(op, "grad_avgs", "must be empty unless centered");
        const std::vector<Array> p = array_list(params, op, "params", n, true);
        const std::vector<Array> g = array_list(grads, op, "grads", n, false);
        const std::vector<Array> v = array_list(square_avgs, op, "square_avgs", n, true);
        const std::vector<Array> b = has_momentum ? array_list(momentum_buffers, op, "momentum_buffers", n, true)
                                                  : std::vector<Array>{};
        const std::vector<Array> ga = centered ? array_list(grad_avgs, op, "grad_avgs", n, true) : std::vector<Array>{};
        std::vector<pygan::RmspropTensor> tensors;
        tensors.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
          const std::string idx = "[" + std::to_string(i) + "]";
          same_shape(op, p[i], "params" + idx, g[i], "grads" + idx);
          same_shape(op, p[i], "params" + idx, v[i], "square_avgs" + idx);
          if (has_momentum) same_shape(op, p[i], "params" + idx, b[i], "momentum_buffers" + idx);
          if (centered) same_shape(op, p[i], "params" + idx, ga[i], "grad_avgs" + idx);
          tensors.push_back({p[i].data(), g[i].data(), v[i].data(), has_momentum ? b[i].data() : nullptr,
                             centered ? ga[i].data() : nullptr, p[i].size});
        }
        py::gil_scoped_release release;
        pygan::rmsprop_step(tensors, lr, alpha, eps, weight_decay, momentum, centered, variant, stream);
      },
      py::arg("params"), py::arg("grads"), py::arg("square_avgs"), py::arg("momentum_buffers"), py::arg("grad_avgs"),
      py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
      py::arg("centered").noconvert(), py::arg("variant") = 0, py::arg("stream") = 0,
      "One torch.optim.RMSprop step, in place; momentum_buffers ([] unless momentum > 0) and grad_avgs ([] unless "
      "centered) hold one array per param.");
}

}  // namespace
