// A convolution's gradient with respect to its input, dx = conv2d_backward_data(dy, w), without
// col2im. The im2col way (pygan/ops/reference.py) computes dcols = dy w, one row of kh*kw*C
// values per output pixel, then scatters and sums them into dx (col2im): a matrix kh*kw/(sh*sw)
// times dx's size written and read again. Here dx is computed by gathering instead: input pixels
// split into sh*sw parity classes (ih mod sh, iw mod sw); in one class every pixel receives the
// same taps (i = ih + ph - oh*sh for the oh that make it an integer), so the class is a stride-1
// correlation of dy with those taps, one GEMM whose A is gathered from dy (padded, NHWC) while
// packing and whose C rows are the class's pixels (a row table). For DCGAN's 4x4 stride-2
// layers: 4 classes of 2x2 taps, K = 4*O each, no zero taps computed.
#include "conv.h"

#include <algorithm>
#include <vector>

#include "buffer.h"
#include "layout.h"

namespace pygan_cpu {
namespace {

// The taps of one dimension's parity class a: i = first, first + s, ... < k, each reading dy at
// index u + offset(i) for the class's u-th pixel (offset = (a + p - i) / s).
struct ClassTaps {
  std::vector<int64_t> tap, offset;
  int64_t pixels;  // how many input indices are = a (mod s)
};

ClassTaps class_taps(int64_t a, int64_t k, int64_t s, int64_t p, int64_t size) {
  ClassTaps t;
  t.pixels = a < size ? (size - a + s - 1) / s : 0;
  for (int64_t i = ((a + p) % s + s) % s; i < k; i += s) {
    t.tap.push_back(i);
    t.offset.push_back((a + p - i) / s);  // exact: i = a + p (mod s)
  }
  return t;
}

}  // namespace

void conv_backward_data(Isa isa, const ConvGeometry& g, const float* dy, const float* w, float* dx, int threads) {
  std::vector<ClassTaps> rows_of(static_cast<size_t>(g.sh)), cols_of(static_cast<size_t>(g.sw));
  // the padding of dy that keeps every tap of every class inside it
  int64_t pad_h = 0, pad_w = 0;
  for (int64_t a = 0; a < g.sh; ++a) {
    ClassTaps& t = rows_of[static_cast<size_t>(a)] = class_taps(a, g.kh, g.sh, g.ph, g.h);
    for (int64_t d : t.offset) pad_h = std::max({pad_h, -d, t.pixels - 1 + d - (g.oh - 1)});
  }
  for (int64_t b = 0; b < g.sw; ++b) {
    ClassTaps& t = cols_of[static_cast<size_t>(b)] = class_taps(b, g.kw, g.sw, g.pw, g.w);
    for (int64_t d : t.offset) pad_w = std::max({pad_w, -d, t.pixels - 1 + d - (g.ow - 1)});
  }
  const int64_t hp = g.oh + 2 * pad_h, wp = g.ow + 2 * pad_w;

  // w (O, C, kh, kw) reordered to (kh, kw, O, C) once, so B's rows (tap, o) are contiguous over c
  // (gathering w's elements kh*kw apart for every class cost about a third of the GEMMs' time)
  static thread_local AlignedBuffer w_buf, dy_buf, dx_buf;
  float* wr = w_buf.get(static_cast<size_t>(g.kh * g.kw * g.o * g.c));
  for (int64_t o = 0; o < g.o; ++o)
    transpose(isa, w + o * g.c * g.kh * g.kw, g.kh * g.kw, wr + o * g.c, g.o * g.c, g.c, g.kh * g.kw);

  // A few images at a time, so that padded dy and NHWC dx stay in cache between the classes'
  // GEMMs and the transposes (a 64-image batch of 32x32x64 gradients ran at 0.65x the speed of
  // 16 images), but enough that each class GEMM has about 1024 rows (w is packed once per chunk).
  // The tables are made for a full chunk; a shorter last chunk uses their start.
  const int64_t per_image = (hp * wp * g.o + g.h * g.w * g.c) * static_cast<int64_t>(sizeof(float));
  const int64_t class_rows = std::max<int64_t>(1, (g.h / g.sh) * (g.w / g.sw));
  const int64_t chunk = std::clamp<int64_t>(std::max((4 << 20) / std::max<int64_t>(per_image, 1), 1024 / class_rows), 1, g.n);
  float* dyp = dy_buf.get(static_cast<size_t>(chunk * hp * wp * g.o));
  float* dxn = dx_buf.get(static_cast<size_t>(chunk * g.h * g.w * g.c));
  struct ClassTables {
    std::vector<int64_t> a_row, a_col, b_row, c_row;
    int64_t pixels;  // per image
  };
  std::vector<ClassTables> classes;
  for (int64_t a = 0; a < g.sh; ++a)
    for (int64_t b = 0; b < g.sw; ++b) {
      const ClassTaps &ti = rows_of[static_cast<size_t>(a)], &tj = cols_of[static_cast<size_t>(b)];
      ClassTables t;
      t.pixels = ti.pixels * tj.pixels;
      if (t.pixels == 0) continue;
      for (int64_t n = 0; n < chunk; ++n)
        for (int64_t u = 0; u < ti.pixels; ++u)
          for (int64_t v = 0; v < tj.pixels; ++v) {
            t.a_row.push_back(((n * hp + u + pad_h) * wp + v + pad_w) * g.o);
            t.c_row.push_back(((n * g.h + a + g.sh * u) * g.w + b + g.sw * v) * g.c);
          }
      for (size_t x = 0; x < ti.tap.size(); ++x)
        for (size_t y = 0; y < tj.tap.size(); ++y)
          for (int64_t o = 0; o < g.o; ++o) {
            t.a_col.push_back((ti.offset[x] * wp + tj.offset[y]) * g.o + o);
            t.b_row.push_back(((ti.tap[x] * g.kw + tj.tap[y]) * g.o + o) * g.c);
          }
      classes.push_back(std::move(t));
    }
  std::vector<int64_t> b_col(static_cast<size_t>(g.c));
  for (int64_t c = 0; c < g.c; ++c) b_col[static_cast<size_t>(c)] = c;

  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t images = std::min(chunk, g.n - n0);
    nchw_to_nhwc(isa, dy + n0 * g.o * g.oh * g.ow, images, g.o, g.oh, g.ow, pad_h, pad_w, dyp, threads);
    for (const ClassTables& t : classes) {
      const Operand A{dyp, t.a_row.data(), t.a_col.data(), false, false};
      const Operand B{wr, t.b_row.data(), b_col.data(), false, true};
      // no taps in this class (a kernel smaller than the stride): the GEMM writes its zeros
      gemm(isa, images * t.pixels, g.c, static_cast<int64_t>(t.a_col.size()), A, B, Out{dxn, 0, 1, t.c_row.data()},
           false, threads);
    }
    nhwc_to_nchw(isa, dxn, images, g.h * g.w, g.c, nullptr, dx + n0 * g.c * g.h * g.w, threads);
  }
}

}  // namespace pygan_cpu
