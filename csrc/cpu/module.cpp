// pygan._cpu: the CPU backend's native GEMM (csrc/cpu/gemm.cpp) for numpy arrays. Three entry
// points, each C = A B with A and B described by offset tables built here:
//   gemm(a, b, out, trans_a, trans_b, accumulate)   out (+)= op(a) op(b), plain 2-D matrices
//   conv_forward(xpad, wk, out, kernel, stride, out_hw)   out = cols(xpad) wk^T
//   conv_weight_grad(dym, xpad, out, kernel, stride, out_hw)   out = dym^T cols(xpad)
// where xpad is an (N, Hp, Wp, C) image (already padded, NHWC) and cols(xpad) its patch matrix,
// row (n, oh, ow), column (i, j, c), as pygan/ops/reference.py's _im2col, never written out;
// and the layout moves around them (csrc/cpu/layout.cpp):
//   nchw_to_nhwc(x, out, padding)   out (N, H + 2ph, W + 2pw, C) = x (N, C, H, W), zero border
//   nhwc_to_nchw(ym, out, bias)     out (N, O, OH, OW) = ym (N*OH*OW, O) (+ bias)
// and a convolution's input gradient without col2im (csrc/cpu/conv.cpp), NCHW in and out:
//   conv_backward_data(dy, w, out, stride, padding)   out = conv2d_backward_data(dy, w)
// Every argument is checked here (float32, C-contiguous, shapes, outputs writable and apart from
// the inputs); bad input raises ValueError naming the argument. The GIL is released while it runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "conv.h"
#include "gemm.h"
#include "layout.h"

namespace py = pybind11;
using pygan_cpu::Isa;
using pygan_cpu::Operand;
using Array = py::array;

namespace {

[[noreturn]] void fail(const std::string& op, const std::string& name, const std::string& what) {
  throw py::value_error(op + ": " + name + " " + what);
}

std::string shape_str(const Array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// A float32 C-contiguous array of ndim dimensions (writable when out).
void check_array(const std::string& op, const std::string& name, const Array& a, int ndim, bool out) {
  if (!a.dtype().is(py::dtype::of<float>()))
    fail(op, name, "must be float32, got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim) fail(op, name, "must be " + std::to_string(ndim) + "-D, got shape " + shape_str(a));
  if (!(a.flags() & py::array::c_style)) fail(op, name, "must be C-contiguous");
  if (out && !a.writeable()) fail(op, name, "must be writable");
}

const char* begin_of(const Array& a) { return static_cast<const char*>(a.data()); }
const char* end_of(const Array& a) { return begin_of(a) + a.nbytes(); }

void check_apart(const std::string& op, const Array out, std::initializer_list<std::pair<const char*, const Array*>> ins) {
  for (const auto& [name, a] : ins)
    if (out.nbytes() && a->nbytes() && begin_of(out) < end_of(*a) && begin_of(*a) < end_of(out))
      fail(op, "out", std::string("must not overlap ") + name);
}

Isa isa_arg(const std::string& op, const std::string& name) {
  if (name.empty()) return pygan_cpu::best_isa();
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
    if (name == pygan_cpu::isa_name(isa)) {
      if (!pygan_cpu::isa_supported(isa)) fail(op, "isa", "'" + name + "' is not supported by this CPU");
      return isa;
    }
  fail(op, "isa", "must be 'generic', 'avx2', 'avx512' or '' (the best), got '" + name + "'");
}

int threads_arg(const std::string& op, int threads) {
  if (threads < 1) fail(op, "threads", "must be >= 1, got " + std::to_string(threads));
  return threads;
}

std::vector<int64_t> arange(int64_t n, int64_t step) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i * step;
  return v;
}

// The patch matrix of an (N, Hp, Wp, C) image: row offsets per output pixel, column offsets per
// (i, j, c) of a kh x kw window.
struct Patches {
  std::vector<int64_t> row, col;
};

Patches patches(const std::string& op, const Array& xpad, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t oh,
                int64_t ow) {
  const int64_t n = xpad.shape(0), hp = xpad.shape(1), wp = xpad.shape(2), c = xpad.shape(3);
  if (kh < 1 || kw < 1) fail(op, "kernel", "must be positive, got (" + std::to_string(kh) + ", " + std::to_string(kw) + ")");
  if (sh < 1 || sw < 1) fail(op, "stride", "must be positive, got (" + std::to_string(sh) + ", " + std::to_string(sw) + ")");
  if (oh < 1 || ow < 1 || (oh - 1) * sh + kh > hp || (ow - 1) * sw + kw > wp)
    fail(op, "out_hw", "(" + std::to_string(oh) + ", " + std::to_string(ow) + ") does not fit xpad " + shape_str(xpad) +
                           " with that kernel and stride");
  Patches p;
  p.row.resize(static_cast<size_t>(n * oh * ow));
  size_t r = 0;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t x = 0; x < ow; ++x) p.row[r++] = ((b * hp + y * sh) * wp + x * sw) * c;
  p.col.resize(static_cast<size_t>(kh * kw * c));
  r = 0;
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j)
      for (int64_t ch = 0; ch < c; ++ch) p.col[r++] = (i * wp + j) * c + ch;
  return p;
}

void run(Isa isa, int64_t m, int64_t n, int64_t k, const Operand& a, const Operand& b, float* c, bool accumulate, int threads,
         bool a_streams = false) {
  py::gil_scoped_release release;
  pygan_cpu::gemm(isa, m, n, k, a, b, pygan_cpu::Out{c, n, 1, nullptr}, accumulate, threads, a_streams);
}

void gemm(const Array& a, const Array& b, Array out, bool trans_a, bool trans_b, bool accumulate, int threads,
          const std::string& isa_name) {
  const std::string op = "gemm";
  check_array(op, "a", a, 2, false);
  check_array(op, "b", b, 2, false);
  check_array(op, "out", out, 2, true);
  const Isa isa = isa_arg(op, isa_name);
  threads = threads_arg(op, threads);
  const int64_t m = trans_a ? a.shape(1) : a.shape(0), k = trans_a ? a.shape(0) : a.shape(1);
  const int64_t kb = trans_b ? b.shape(1) : b.shape(0), n = trans_b ? b.shape(0) : b.shape(1);
  if (kb != k) fail(op, "b", "has " + std::to_string(kb) + " rows (after trans_b) where op(a) " + shape_str(a) + " has " + std::to_string(k) + " columns");
  if (out.shape(0) != m || out.shape(1) != n)
    fail(op, "out", "must be (" + std::to_string(m) + ", " + std::to_string(n) + "), got " + shape_str(out));
  check_apart(op, out, {{"a", &a}, {"b", &b}});
  const int64_t lda = a.shape(1), ldb = b.shape(1);
  // op(a)(i, p) = a[i*lda + p], or a[p*lda + i] transposed
  const auto ar = trans_a ? arange(m, 1) : arange(m, lda), ac = trans_a ? arange(k, lda) : arange(k, 1);
  const auto br = trans_b ? arange(k, 1) : arange(k, ldb), bc = trans_b ? arange(n, ldb) : arange(n, 1);
  const Operand A{static_cast<const float*>(a.data()), ar.data(), ac.data(), trans_a, !trans_a};
  const Operand B{static_cast<const float*>(b.data()), br.data(), bc.data(), trans_b, !trans_b};
  run(isa, m, n, k, A, B, static_cast<float*>(out.mutable_data()), accumulate, threads);
}

// What conv_forward and conv_weight_grad share: their arrays checked (xpad an image, the other
// operand `name` and out matrices), the micro-kernel, the threads, and xpad's patch tables.
struct ConvCall {
  Isa isa;
  int threads;
  Patches p;
  int64_t m, k;  // patch rows (N*OH*OW) and columns (kh*kw*C)
};

ConvCall conv_call(const std::string& op, const Array& xpad, const std::string& name, const Array& other,
                   const Array& out, std::pair<int64_t, int64_t> kernel, std::pair<int64_t, int64_t> stride,
                   std::pair<int64_t, int64_t> out_hw, int threads, const std::string& isa_name) {
  check_array(op, "xpad", xpad, 4, false);
  check_array(op, name, other, 2, false);
  check_array(op, "out", out, 2, true);
  ConvCall call{isa_arg(op, isa_name), threads_arg(op, threads),
                patches(op, xpad, kernel.first, kernel.second, stride.first, stride.second, out_hw.first, out_hw.second),
                0, 0};
  call.m = static_cast<int64_t>(call.p.row.size());
  call.k = static_cast<int64_t>(call.p.col.size());
  check_apart(op, out, {{"xpad", &xpad}, {name.c_str(), &other}});
  return call;
}

void conv_forward(const Array& xpad, const Array& wk, Array out, std::pair<int64_t, int64_t> kernel,
                  std::pair<int64_t, int64_t> stride, std::pair<int64_t, int64_t> out_hw, int threads,
                  const std::string& isa_name) {
  const std::string op = "conv_forward";
  const ConvCall c = conv_call(op, xpad, "wk", wk, out, kernel, stride, out_hw, threads, isa_name);
  const int64_t o = wk.shape(0);
  if (wk.shape(1) != c.k) fail(op, "wk", "must have kh*kw*C = " + std::to_string(c.k) + " columns, got " + shape_str(wk));
  if (out.shape(0) != c.m || out.shape(1) != o)
    fail(op, "out", "must be (N*OH*OW, O) = (" + std::to_string(c.m) + ", " + std::to_string(o) + "), got " + shape_str(out));
  const auto wr = arange(c.k, 1), wc = arange(o, c.k);  // wk^T(p, o) = wk[o*k + p]
  const Operand A{static_cast<const float*>(xpad.data()), c.p.row.data(), c.p.col.data(), false, false};
  const Operand B{static_cast<const float*>(wk.data()), wr.data(), wc.data(), true, false};
  run(c.isa, c.m, o, c.k, A, B, static_cast<float*>(out.mutable_data()), false, c.threads, /*a_streams=*/true);
}

void conv_weight_grad(const Array& dym, const Array& xpad, Array out, std::pair<int64_t, int64_t> kernel,
                      std::pair<int64_t, int64_t> stride, std::pair<int64_t, int64_t> out_hw, bool accumulate,
                      int threads, const std::string& isa_name) {
  const std::string op = "conv_weight_grad";
  const ConvCall c = conv_call(op, xpad, "dym", dym, out, kernel, stride, out_hw, threads, isa_name);
  const int64_t o = dym.shape(1);
  if (dym.shape(0) != c.m) fail(op, "dym", "must have N*OH*OW = " + std::to_string(c.m) + " rows, got " + shape_str(dym));
  if (out.shape(0) != o || out.shape(1) != c.k)
    fail(op, "out", "must be (O, kh*kw*C) = (" + std::to_string(o) + ", " + std::to_string(c.k) + "), got " + shape_str(out));
  const auto dr = arange(o, 1), dc = arange(c.m, o);  // dym^T(o, q) = dym[q*o_count + o]
  const Operand A{static_cast<const float*>(dym.data()), dr.data(), dc.data(), true, false};
  const Operand B{static_cast<const float*>(xpad.data()), c.p.row.data(), c.p.col.data(), false, false};
  run(c.isa, o, c.k, c.m, A, B, static_cast<float*>(out.mutable_data()), accumulate, c.threads);
}

void nchw_to_nhwc(const Array& x, Array out, std::pair<int64_t, int64_t> padding, int threads, const std::string& isa_name) {
  const std::string op = "nchw_to_nhwc";
  check_array(op, "x", x, 4, false);
  check_array(op, "out", out, 4, true);
  const Isa isa = isa_arg(op, isa_name);
  threads = threads_arg(op, threads);
  const auto [ph, pw] = padding;
  if (ph < 0 || pw < 0) fail(op, "padding", "must be >= 0, got (" + std::to_string(ph) + ", " + std::to_string(pw) + ")");
  const int64_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
  if (out.shape(0) != n || out.shape(1) != h + 2 * ph || out.shape(2) != w + 2 * pw || out.shape(3) != c)
    fail(op, "out", "must be (N, H + 2ph, W + 2pw, C) = (" + std::to_string(n) + ", " + std::to_string(h + 2 * ph) + ", " +
                        std::to_string(w + 2 * pw) + ", " + std::to_string(c) + "), got " + shape_str(out));
  check_apart(op, out, {{"x", &x}});
  const float* xp = static_cast<const float*>(x.data());
  float* op_ = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  pygan_cpu::nchw_to_nhwc(isa, xp, n, c, h, w, ph, pw, op_, threads);
}

void nhwc_to_nchw(const Array& ym, Array out, const std::optional<Array>& bias, int threads, const std::string& isa_name) {
  const std::string op = "nhwc_to_nchw";
  check_array(op, "ym", ym, 2, false);
  check_array(op, "out", out, 4, true);
  const Isa isa = isa_arg(op, isa_name);
  threads = threads_arg(op, threads);
  const int64_t n = out.shape(0), o = out.shape(1), p = out.shape(2) * out.shape(3);
  if (ym.shape(0) != n * p || ym.shape(1) != o)
    fail(op, "ym", "must be (N*OH*OW, O) = (" + std::to_string(n * p) + ", " + std::to_string(o) + ") for out " +
                       shape_str(out) + ", got " + shape_str(ym));
  check_apart(op, out, {{"ym", &ym}});
  const float* b = nullptr;
  if (bias) {
    check_array(op, "bias", *bias, 1, false);
    if (bias->shape(0) != o) fail(op, "bias", "must be (" + std::to_string(o) + ",), got " + shape_str(*bias));
    check_apart(op, out, {{"bias", &*bias}});
    b = static_cast<const float*>(bias->data());
  }
  const float* src = static_cast<const float*>(ym.data());
  float* dst = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  pygan_cpu::nhwc_to_nchw(isa, src, n, p, o, b, dst, threads);
}

void conv_backward_data(const Array& dy, const Array& w, Array out, std::pair<int64_t, int64_t> stride,
                        std::pair<int64_t, int64_t> padding, int threads, const std::string& isa_name) {
  const std::string op = "conv_backward_data";
  check_array(op, "dy", dy, 4, false);
  check_array(op, "w", w, 4, false);
  check_array(op, "out", out, 4, true);
  const Isa isa = isa_arg(op, isa_name);
  threads = threads_arg(op, threads);
  pygan_cpu::ConvGeometry g{out.shape(0), out.shape(1), out.shape(2), out.shape(3), dy.shape(1), dy.shape(2), dy.shape(3),
                            w.shape(2), w.shape(3), stride.first, stride.second, padding.first, padding.second};
  if (g.sh < 1 || g.sw < 1) fail(op, "stride", "must be positive, got (" + std::to_string(g.sh) + ", " + std::to_string(g.sw) + ")");
  if (g.ph < 0 || g.pw < 0) fail(op, "padding", "must be >= 0, got (" + std::to_string(g.ph) + ", " + std::to_string(g.pw) + ")");
  if (w.shape(0) != g.o || w.shape(1) != g.c)
    fail(op, "w", "must be (O, C, kh, kw) with O = " + std::to_string(g.o) + " (dy's channels) and C = " +
                      std::to_string(g.c) + " (out's), got " + shape_str(w));
  if (dy.shape(0) != g.n) fail(op, "dy", "must have out's batch size " + std::to_string(g.n) + ", got " + shape_str(dy));
  const int64_t span_h = g.h + 2 * g.ph - g.kh, span_w = g.w + 2 * g.pw - g.kw;
  if (g.kh < 1 || g.kw < 1 || span_h < 0 || span_w < 0 || span_h / g.sh + 1 != g.oh || span_w / g.sw + 1 != g.ow)
    fail(op, "dy", shape_str(dy) + " is not the output of a convolution of out " + shape_str(out) + " by w " +
                       shape_str(w) + " with that stride and padding");
  check_apart(op, out, {{"dy", &dy}, {"w", &w}});
  const float* dyp = static_cast<const float*>(dy.data());
  const float* wp = static_cast<const float*>(w.data());
  float* dx = static_cast<float*>(out.mutable_data());
  py::gil_scoped_release release;
  pygan_cpu::conv_backward_data(isa, g, dyp, wp, dx, threads);
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "pygan's CPU GEMM and implicit-im2col convolution GEMMs (csrc/cpu)";
  m.def("best_isa", [] { return std::string(pygan_cpu::isa_name(pygan_cpu::best_isa())); },
        "the widest micro-kernel this CPU runs: 'avx512', 'avx2' or 'generic'");
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
      if (pygan_cpu::isa_supported(isa)) out.emplace_back(pygan_cpu::isa_name(isa));
    return out;
  });
  m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("accumulate") = false, py::arg("threads") = 1, py::arg("isa") = "");
  m.def("conv_forward", &conv_forward, py::arg("xpad"), py::arg("wk"), py::arg("out"), py::arg("kernel"),
        py::arg("stride"), py::arg("out_hw"), py::arg("threads") = 1, py::arg("isa") = "");
  m.def("conv_weight_grad", &conv_weight_grad, py::arg("dym"), py::arg("xpad"), py::arg("out"), py::arg("kernel"),
        py::arg("stride"), py::arg("out_hw"), py::arg("accumulate") = false, py::arg("threads") = 1,
        py::arg("isa") = "");
  m.def("nchw_to_nhwc", &nchw_to_nhwc, py::arg("x"), py::arg("out"), py::arg("padding") = std::make_pair(0, 0),
        py::arg("threads") = 1, py::arg("isa") = "");
  m.def("conv_backward_data", &conv_backward_data, py::arg("dy"), py::arg("w"), py::arg("out"), py::arg("stride"),
        py::arg("padding"), py::arg("threads") = 1, py::arg("isa") = "");
  m.def("nhwc_to_nchw", &nhwc_to_nchw, py::arg("ym"), py::arg("out"), py::arg("bias") = py::none(),
        py::arg("threads") = 1, py::arg("isa") = "");
}
