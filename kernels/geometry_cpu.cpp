// Compiled CPU loops of the paste warp (reference.warp_crop), the LSJ resample (lsj.sample_affine), the image
// jitter (photometric.jitter_image) and the composite (reference.composite), built with g++ -O3 at first use and
// loaded with ctypes by kernels/geometry_cpu.py.
//
// Bit-exact with the NumPy reference by construction: every output value comes from the per-pixel functions of
// geometry.cuh (the CUDA kernels' own), evaluated in the same integer arithmetic. What these loops add is only
// *where* they evaluate: a paste's pixels only where its mask is set, the mask only where the crop is sampled; an
// LSJ mask only inside the image of its tight box under the map (its output is empty elsewhere), nothing on the
// padding. Outputs arrive zero-filled from NumPy and only non-zero values need writing.
//
// Layouts: images (h, w, 3) uint8 with 3 contiguous bytes per pixel and any row stride; masks one byte per pixel
// (NumPy bool), contiguous within a row, any row / plane stride. Strides are in bytes.
#define __host__
#define __device__
#define __forceinline__ inline

#include <cstring>
#include <vector>

#include "geometry.cuh"
#include "photometric.cuh"

namespace {

// Tight box [x0, x1) x [y0, y1) of an h x w mask plane; false when it is empty.
bool mask_box(const unsigned char* m, long long row_bytes, long long h, long long w, long long box[4]) {
  long long y0 = 0, y1 = h;
  auto row_any = [&](long long y) {
    const unsigned char* r = m + y * row_bytes;
    unsigned char any = 0;
    for (long long x = 0; x < w; ++x) any |= r[x];  // no early exit: the compiler vectorises the OR
    return any != 0;
  };
  while (y0 < h && !row_any(y0)) ++y0;
  if (y0 == h) return false;
  while (!row_any(y1 - 1)) --y1;
  long long x0 = w, x1 = 0;
  for (long long y = y0; y < y1; ++y) {  // only the columns outside the box found so far are read
    const unsigned char* r = m + y * row_bytes;
    for (long long x = 0; x < x0; ++x) {
      if (r[x]) { x0 = x; break; }
    }
    for (long long x = w - 1; x >= x1; --x) {
      if (r[x]) { x1 = x + 1; break; }
    }
  }
  box[0] = x0; box[1] = y0; box[2] = x1; box[3] = y1;
  return true;
}

// The LSJ map is axis-aligned: u = a X + c, v = e Y + f (b = d = 0, checked by the caller).
struct AxisMap {
  long long a, c, e, f, h, w, valid_w, valid_h;
};

// The output window [x0, x1) x [y0, y1) of the input box: the canvas pixels whose clamped nearest sample lies in it.
void lsj_window(const AxisMap& m, const long long box[4], long long win[4]) {
  ocp_clamped_index_span(m.a, m.c, box[0], box[2], m.w, m.valid_w, &win[0], &win[2]);
  ocp_clamped_index_span(m.e, m.f, box[1], box[3], m.h, m.valid_h, &win[1], &win[3]);
}

}  // namespace

// Paste warp of reference.warp_crop for a non-identity geometry: canvas window [x0, x0 + ww) x [y0, y0 + wh)
// of an h x w crop under inv = (a, b, c, d, e, f). out_mask (wh, ww) and out_pix (wh, ww, 3), zero-filled, get the
// nearest mask (empty outside the crop) and, where it is set, the bilinear pixels. Returns the mask's pixel count.
extern "C" long long cpu_geo_warp_crop(const unsigned char* img, long long img_row, const unsigned char* mask,
                                       long long mask_row, long long h, long long w, const long long* inv,
                                       long long x0, long long y0, long long ww, long long wh,
                                       unsigned char* out_mask, unsigned char* out_pix) {
  const long long a = inv[0], b = inv[1], c = inv[2], d = inv[3], e = inv[4], f = inv[5];
  long long count = 0;
  for (long long y = 0; y < wh; ++y) {
    const long long bu = a * x0 + b * (y0 + y) + c;  // coordinates of window column 0: u = a x + bu
    const long long bv = d * x0 + e * (y0 + y) + f;
    long long su0, su1, sv0, sv1;  // columns whose mask lookup falls inside the crop, per axis
    ocp_index_span(a, bu, 0, w, ww, &su0, &su1);
    ocp_index_span(d, bv, 0, h, ww, &sv0, &sv1);
    const long long xe = ocp_min(su1, sv1);
    for (long long x = ocp_max(su0, sv0); x < xe; ++x) {
      const long long u = a * x + bu, v = d * x + bv;
      if (!mask[ocp_floor_shift(v, OCP_Q_BITS) * mask_row + ocp_floor_shift(u, OCP_Q_BITS)]) continue;
      out_mask[y * ww + x] = 1;
      ocp_bilinear_pixel(img, img_row, h, w, u, v, out_pix + (y * ww + x) * 3);
      ++count;
    }
  }
  return count;
}

namespace {

// The x half of the bilinear mix (ocp_bilinear_row) of whole input rows, for the canvas columns: the last two rows
// computed are kept, because consecutive canvas rows read the same input rows (always when upscaling).
class RowCache {
 public:
  RowCache(const unsigned char* img, long long img_row, long long w, const long long* inv, long long valid_w)
      : img_(img), img_row_(img_row), valid_w_(valid_w), off0_(valid_w), off1_(valid_w), fu_(valid_w) {
    for (long long X = 0; X < valid_w; ++X) {
      const OcpTap t = ocp_bilinear_tap(inv[0] * X + inv[2], w);
      off0_[X] = t.i0 * 3;
      off1_[X] = t.i1 * 3;
      fu_[X] = (int)t.f;
    }
    for (int s = 0; s < 2; ++s) rows_[s].resize(valid_w * 3);
  }

  // Row i's x-mixed values (valid_w * 3 ints); never evicts the row ``keep`` (the other tap's, still in use).
  const int* row(long long i, long long keep) {
    for (int s = 0; s < 2; ++s) {
      if (idx_[s] == i) return rows_[s].data();
    }
    const int s = idx_[0] == keep ? 1 : 0;
    const unsigned char* src = img_ + i * img_row_;
    int* out = rows_[s].data();
    for (long long X = 0; X < valid_w_; ++X) {
      for (int k = 0; k < 3; ++k) out[X * 3 + k] = ocp_bilinear_row(src[off0_[X] + k], src[off1_[X] + k], fu_[X]);
    }
    idx_[s] = i;
    return out;
  }

 private:
  const unsigned char* img_;
  long long img_row_, valid_w_;
  std::vector<long long> off0_, off1_;
  std::vector<int> fu_;
  long long idx_[2] = {-1, -1};
  std::vector<int> rows_[2];
};

}  // namespace

// LSJ pixels of lsj.sample_affine for an axis-aligned map inv = (a, 0, c, 0, e, f): the valid_h x valid_w content
// of the output canvas (out_row bytes per row; the padding is left as it is). Each pixel is geometry.cuh's
// ocp_bilinear_mix of the reference's four samples, evaluated separably: the x half once per input row
// (RowCache), the y half per canvas row.
extern "C" void cpu_geo_lsj_image(const unsigned char* img, long long img_row, long long h, long long w,
                                  const long long* inv, long long valid_w, long long valid_h, unsigned char* out,
                                  long long out_row) {
  RowCache cache(img, img_row, w, inv, valid_w);
  for (long long Y = 0; Y < valid_h; ++Y) {
    const OcpTap tv = ocp_bilinear_tap(inv[4] * Y + inv[5], h);
    const int* top = cache.row(tv.i0, -1);
    const int* bot = cache.row(tv.i1, tv.i0);
    unsigned char* o = out + Y * out_row;
    const int fv = (int)tv.f;
    for (long long j = 0; j < valid_w * 3; ++j) o[j] = ocp_bilinear_col(top[j], bot[j], fv);
  }
}

// Which of n mask planes (plane_bytes apart) keep a pixel on the LSJ canvas (hit[i] = 1), as
// sample_affine(...).any() would say; stops at a plane's first sampled pixel that is set.
extern "C" void cpu_geo_lsj_hits(const unsigned char* masks, long long n, long long plane_bytes, long long row_bytes,
                                 long long h, long long w, const long long* inv, long long valid_w,
                                 long long valid_h, unsigned char* hit) {
  const AxisMap m{inv[0], inv[2], inv[4], inv[5], h, w, valid_w, valid_h};
  for (long long i = 0; i < n; ++i) {
    const unsigned char* plane = masks + i * plane_bytes;
    long long box[4], win[4];
    hit[i] = 0;
    if (!mask_box(plane, row_bytes, h, w, box)) continue;
    lsj_window(m, box, win);
    for (long long Y = win[1]; Y < win[3] && !hit[i]; ++Y) {
      const unsigned char* r = plane + ocp_nearest_clamped(m.e * Y + m.f, h) * row_bytes;
      for (long long X = win[0]; X < win[2]; ++X) {
        if (r[ocp_nearest_clamped(m.a * X + m.c, w)]) { hit[i] = 1; break; }
      }
    }
  }
}

// LSJ masks of lsj.sample_affine: output plane k (out_plane bytes apart, rows out_row bytes apart, zero-filled) is
// input plane rows[k] sampled nearest with clamped indices, written only inside its box's window (the rest of it
// is empty). boxes[4k..4k+3] get the output's tight box (x0, y0, x1, y1), zeros when empty (masks.tight_boxes).
extern "C" void cpu_geo_lsj_masks(const unsigned char* masks, long long plane_bytes, long long row_bytes,
                                  long long h, long long w, const long long* rows, long long n_rows,
                                  const long long* inv, long long valid_w, long long valid_h, unsigned char* out,
                                  long long out_plane, long long out_row, long long* boxes) {
  const AxisMap m{inv[0], inv[2], inv[4], inv[5], h, w, valid_w, valid_h};
  std::vector<long long> col(valid_w);  // input column of each canvas column
  for (long long X = 0; X < valid_w; ++X) col[X] = ocp_nearest_clamped(m.a * X + m.c, w);
  for (long long k = 0; k < n_rows; ++k) {
    const unsigned char* plane = masks + rows[k] * plane_bytes;
    unsigned char* o = out + k * out_plane;
    long long box[4], win[4], ob[4] = {valid_w, valid_h, 0, 0};
    std::memset(boxes + 4 * k, 0, 4 * sizeof(long long));
    if (!mask_box(plane, row_bytes, h, w, box)) continue;
    lsj_window(m, box, win);
    long long prev_iv = -1, lo = 0, hi = -1;  // [lo, hi]: set columns of the previous output row
    for (long long Y = win[1]; Y < win[3]; ++Y) {
      const long long iv = ocp_nearest_clamped(m.e * Y + m.f, h);
      unsigned char* orow = o + Y * out_row;
      if (iv == prev_iv) {  // the same input row (upscaling): the same output row
        std::memcpy(orow + win[0], orow - out_row + win[0], win[2] - win[0]);
      } else {
        const unsigned char* r = plane + iv * row_bytes;
        lo = win[2];
        hi = -1;
        for (long long X = win[0]; X < win[2]; ++X) {
          const unsigned char s = r[col[X]];
          orow[X] = s;
          if (s) { lo = ocp_min(lo, X); hi = X; }
        }
        prev_iv = iv;
      }
      if (hi >= 0) {
        ob[0] = ocp_min(ob[0], lo); ob[1] = ocp_min(ob[1], Y);
        ob[2] = ocp_max(ob[2], hi + 1); ob[3] = Y + 1;
      }
    }
    if (ob[2] > 0) std::memcpy(boxes + 4 * k, ob, sizeof(ob));
  }
}

namespace {

// f of every numerator v of a blend of uint8 operands with factor n (ocp_blend_numerator: v in [lo, hi]), tabulated:
// a blend's value depends on its numerator only, so a crop's blends become one table look-up per value.
// Loops read it through a local View (raw pointer and offset): -fno-strict-aliasing would otherwise reload the
// vector's pointer after every byte written.
class NumeratorTable {
 public:
  struct View {
    const unsigned char* values;
    long long lo;
    unsigned char operator()(long long v) const { return values[v - lo]; }
  };

  template <class F>
  NumeratorTable(long long n, F f) : lo_(255 * (ocp_min(0, 10 - n) + ocp_min(0, n))) {
    const long long hi = 255 * (ocp_max(0, 10 - n) + ocp_max(0, n));
    values_.resize(hi - lo_ + 1);
    for (long long v = lo_; v <= hi; ++v) values_[v - lo_] = (unsigned char)f(v);
  }
  View view() const { return View{values_.data(), lo_}; }

 private:
  long long lo_;
  std::vector<unsigned char> values_;
};

// Colour then brightness of the h x w crop img into the contiguous a (ocp_jitter_colour_brightness_pixel, its
// per-value step tabulated); returns the sum of the result's grey.
long long colour_brightness(const unsigned char* img, long long img_row, long long h, long long w, long long n_colour,
                            long long n_bright, unsigned char* a) {
  const NumeratorTable table(n_colour, [n_bright](long long v) { return ocp_jitter_colour_brightness_of(v, n_bright); });
  const NumeratorTable::View step = table.view();
  long long grey_sum = 0;
  for (long long y = 0; y < h; ++y) {
    const unsigned char* p = img + y * img_row;
    unsigned char* o = a + y * w * 3;
    for (long long x = 0; x < w * 3; x += 3) {
      const long long grey = ocp_grey(p[x], p[x + 1], p[x + 2]);
      const unsigned char c0 = step(ocp_blend_numerator(grey, p[x], n_colour));
      const unsigned char c1 = step(ocp_blend_numerator(grey, p[x + 1], n_colour));
      const unsigned char c2 = step(ocp_blend_numerator(grey, p[x + 2], n_colour));
      o[x] = c0;
      o[x + 1] = c1;
      o[x + 2] = c2;
      grey_sum += ocp_grey(c0, c1, c2);
    }
  }
  return grey_sum;
}

// Sharpness step of photometric.jitter_image on a contiguous h x w x 3 crop a, into out: each value blended with the
// SMOOTH filter at its pixel (ocp_jitter_sharp_value, its blend tabulated), the border through reflected neighbours
// (ocp_reflect101). The filter sum is evaluated separably: per row, the vertical sums of three rows, then three of
// them.
void sharpen(const unsigned char* a, long long h, long long w, long long n_sharp, unsigned char* out) {
  const NumeratorTable table(n_sharp, ocp_tenths_floor);
  const NumeratorTable::View blend = table.view();
  auto value = [blend, n_sharp](long long s, long long v) {
    return blend(ocp_blend_numerator(ocp_smooth13(s), v, n_sharp));
  };
  const long long rw = w * 3;
  std::vector<int> sums(rw);  // vertical 3-sums of the current row's neighbourhood, per (column, channel)
  int* col = sums.data();
  for (long long y = 0; y < h; ++y) {
    const unsigned char* r0 = a + ocp_reflect101(y - 1, h) * rw;
    const unsigned char* r1 = a + y * rw;
    const unsigned char* r2 = a + ocp_reflect101(y + 1, h) * rw;
    unsigned char* o = out + y * rw;
    for (long long j = 0; j < rw; ++j) col[j] = r0[j] + r1[j] + r2[j];
    for (long long j = 3; j < rw - 3; ++j) {  // inner columns: neighbours 3 bytes either side
      o[j] = value(col[j - 3] + col[j] + col[j + 3] + 4 * r1[j], r1[j]);
    }
    for (long long x : {0LL, w - 1}) {  // the border columns (one column when w == 1)
      const long long l = ocp_reflect101(x - 1, w) * 3, r = ocp_reflect101(x + 1, w) * 3;
      for (long long c = 0; c < 3; ++c) {
        o[x * 3 + c] = value(col[l + c] + col[x * 3 + c] + col[r + c] + 4 * r1[x * 3 + c], r1[x * 3 + c]);
      }
    }
  }
}

}  // namespace

// Image jitter of photometric.jitter_image_numpy (the seed's order: colour, brightness, contrast, sharpness) of an
// h x w crop (h, w >= 1; img_row bytes per row, 3 contiguous bytes per pixel) with factors[0..3] in tenths, into
// out (h, w, 3) contiguous. Every value is photometric.cuh's (the CUDA kernels' own per-pixel steps). Returns the
// contrast step's degenerate: the mean grey of the colour + brightness result, rounded half to even.
extern "C" long long cpu_jitter(const unsigned char* img, long long img_row, long long h, long long w,
                                const long long* factors, unsigned char* out) {
  const long long n = h * w;
  std::vector<unsigned char> a(n * 3);
  const long long mean = ocp_round_half_even_div(colour_brightness(img, img_row, h, w, factors[0], factors[1],
                                                                   a.data()), n);
  unsigned char contrast[256];  // the contrast blend of each value: one evaluation per value, not per pixel
  for (int v = 0; v < 256; ++v) contrast[v] = (unsigned char)ocp_blend_floor(mean, v, factors[2]);
  for (long long j = 0; j < n * 3; ++j) a[j] = contrast[a[j]];
  sharpen(a.data(), h, w, factors[3], out);
  return mean;
}

// Composite of reference.composite, in place: inside the wh x ww window at (wx0, wy0) of the image (img_row bytes
// per row), where mask (mask_row bytes per row) is set, the pasted pixel (pix, pix_row bytes per row) replaces the
// image's (alpha null) or is mixed with it (ocp_alpha_mix; alpha int32, alpha_row elements per row).
extern "C" void cpu_composite(unsigned char* img, long long img_row, long long wx0, long long wy0, long long ww,
                              long long wh, const unsigned char* mask, long long mask_row, const unsigned char* pix,
                              long long pix_row, const int* alpha, long long alpha_row) {
  for (long long y = 0; y < wh; ++y) {
    unsigned char* o = img + (wy0 + y) * img_row + wx0 * 3;
    const unsigned char* m = mask + y * mask_row;
    const unsigned char* p = pix + y * pix_row;
    if (alpha == nullptr) {
      for (long long x = 0; x < ww; ++x) {
        if (m[x]) std::memcpy(o + x * 3, p + x * 3, 3);
      }
      continue;
    }
    const int* a = alpha + y * alpha_row;
    for (long long x = 0; x < ww; ++x) {
      if (!m[x]) continue;
      for (long long c = x * 3; c < x * 3 + 3; ++c) o[c] = (unsigned char)ocp_alpha_mix(p[c], o[c], a[x]);
    }
  }
}
