// Per-pixel geometry of OC&P, written once for every backend: the CUDA kernels (NVRTC / nvcc, through
// ocp_common.cuh), the host emulator (kernels/emulate.h) and the compiled CPU loops (kernels/geometry_cpu.cpp).
//
// The integer arithmetic is the NumPy reference's (ocp_dali.reference: nearest_q16, bilinear_q16, warp_crop),
// so each backend that evaluates these functions gives the reference's bits by construction:
//   * coordinates are Q16 fixed point (ocp_dali.geometry): pixel i covers [i, i+1) in 2**16 units;
//   * nearest: floor(u / 2**16), either tested against the image (a paste: outside is empty) or clamped (LSJ);
//   * bilinear: ub = u - 2**15, index floor(ub / 2**16) and its right neighbour, both clamped to the image,
//     8-bit weight (ub mod 2**16) >> 8, then ((top * (256 - fv) + bot * fv + 2**15) >> 16): round half up.
// Every function is __host__ __device__ and needs no system header. Including files provide the qualifiers:
// NVRTC / nvcc know them; kernels/emulate.h and kernels/geometry_cpu.cpp define them away for g++.
#pragma once

#define OCP_Q_BITS 16
#define OCP_Q_HALF 32768LL
// A bound no Q16 coordinate reaches (|coordinates| stay far below 2**40), used for "no bound" in ocp_linear_span.
#define OCP_UNBOUNDED (1LL << 62)

// ---- integer helpers (explicit floor semantics: never rely on the sign behaviour of / and >>) ----

__host__ __device__ __forceinline__ long long ocp_min(long long a, long long b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ long long ocp_max(long long a, long long b) { return a > b ? a : b; }
__host__ __device__ __forceinline__ long long ocp_clamp(long long v, long long lo, long long hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// floor(a / b) for b > 0 (NumPy's // on integers); C's / truncates toward zero.
__host__ __device__ __forceinline__ long long ocp_floordiv(long long a, long long b) {
  long long q = a / b;
  if ((a % b != 0) && (a < 0)) q -= 1;
  return q;
}

// ceil(a / b) for b > 0.
__host__ __device__ __forceinline__ long long ocp_ceildiv(long long a, long long b) { return -ocp_floordiv(-a, b); }

// floor(v / 2**s) (NumPy's >> on int64), written without a right shift of a negative number.
__host__ __device__ __forceinline__ long long ocp_floor_shift(long long v, int s) {
  return v >= 0 ? (v >> s) : ~((~v) >> s);
}

// ---- sampling ----

// Pixel index of a Q16 coordinate clamped to [0, n) (reference.nearest_q16, the LSJ's mask sampling).
__host__ __device__ __forceinline__ long long ocp_nearest_clamped(long long u, long long n) {
  return ocp_clamp(ocp_floor_shift(u, OCP_Q_BITS), 0, n - 1);
}

// One axis of a bilinear sample: the two clamped neighbour indices and the 8-bit weight of the second.
struct OcpTap {
  long long i0, i1, f;
};

__host__ __device__ __forceinline__ OcpTap ocp_bilinear_tap(long long u, long long n) {
  const long long ub = u - OCP_Q_HALF;
  const long long i = ocp_floor_shift(ub, OCP_Q_BITS);
  OcpTap t;
  t.i0 = ocp_clamp(i, 0, n - 1);
  t.i1 = ocp_clamp(i + 1, 0, n - 1);
  t.f = (ub & 0xFFFF) >> 8;  // low 16 bits of the two's complement: non-negative, as NumPy's &
  return t;
}

// The bilinear mix in its two separable halves: along x (two samples of one row, weight fu of the second), then
// along y (two such row values, weight fv of the second), rounded half up. int is exact: the largest intermediate
// is 255 * 256 * 256 + 2**15 < 2**31.
__host__ __device__ __forceinline__ int ocp_bilinear_row(int p0, int p1, int fu) { return p0 * (256 - fu) + p1 * fu; }

__host__ __device__ __forceinline__ unsigned char ocp_bilinear_col(int top, int bot, int fv) {
  return (unsigned char)((top * (256 - fv) + bot * fv + 32768) >> 16);  // non-negative
}

// The bilinear mix of four uint8 samples with 8-bit weights (fu along x, fv along y).
__host__ __device__ __forceinline__ unsigned char ocp_bilinear_mix(int p00, int p01, int p10, int p11, int fu,
                                                                   int fv) {
  return ocp_bilinear_col(ocp_bilinear_row(p00, p01, fu), ocp_bilinear_row(p10, p11, fu), fv);
}

// Integer bilinear sample (3 channels into out[0..2]) of an h x w x 3 uint8 image at Q16 coordinates (u, v).
// row_bytes: bytes between image rows; pixels are 3 contiguous bytes (reference.bilinear_q16).
__host__ __device__ __forceinline__ void ocp_bilinear_pixel(const unsigned char* img, long long row_bytes,
                                                            long long h, long long w, long long u, long long v,
                                                            unsigned char* out) {
  const OcpTap tu = ocp_bilinear_tap(u, w), tv = ocp_bilinear_tap(v, h);
  const unsigned char* r0 = img + tv.i0 * row_bytes;
  const unsigned char* r1 = img + tv.i1 * row_bytes;
  for (int c = 0; c < 3; ++c) {
    out[c] = ocp_bilinear_mix(r0[tu.i0 * 3 + c], r0[tu.i1 * 3 + c], r1[tu.i0 * 3 + c], r1[tu.i1 * 3 + c],
                              (int)tu.f, (int)tv.f);
  }
}

// ---- where an affine coordinate falls in a range ----

// [*x0, *x1): the integers X in [0, n) with lo <= a * X + base < hi (empty: *x0 == *x1). Exact integer
// arithmetic, so a loop over the span visits precisely the pixels whose coordinate lies in the range: used to
// skip the pixels that sample outside a crop or a mask's box. lo = -OCP_UNBOUNDED / hi = OCP_UNBOUNDED: no bound.
__host__ __device__ __forceinline__ void ocp_linear_span(long long a, long long base, long long lo, long long hi,
                                                         long long n, long long* x0, long long* x1) {
  long long s = 0, t = n;
  if (a > 0) {  // a X >= lo - base  and  a X < hi - base
    s = ocp_ceildiv(lo - base, a);
    t = ocp_ceildiv(hi - base, a);
  } else if (a < 0) {  // (-a) X <= base - lo  and  (-a) X > base - hi
    s = ocp_floordiv(base - hi, -a) + 1;
    t = ocp_floordiv(base - lo, -a) + 1;
  } else if (base < lo || base >= hi) {
    t = 0;
  }
  s = ocp_clamp(s, 0, n);
  *x0 = s;
  *x1 = ocp_clamp(t, s, n);
}

// The span of X in [0, n) whose Q16 coordinate u = a X + base has floor(u / 2**16) in [i0, i1) (a paste's mask
// lookup, which is empty outside the crop: i0 = 0, i1 = crop size).
__host__ __device__ __forceinline__ void ocp_index_span(long long a, long long base, long long i0, long long i1,
                                                        long long n, long long* x0, long long* x1) {
  ocp_linear_span(a, base, i0 << OCP_Q_BITS, i1 << OCP_Q_BITS, n, x0, x1);
}

// The same for a clamped index (ocp_nearest_clamped into [0, size)): index 0 also takes every coordinate
// below the image, index size - 1 every coordinate beyond it.
__host__ __device__ __forceinline__ void ocp_clamped_index_span(long long a, long long base, long long i0,
                                                                long long i1, long long size, long long n,
                                                                long long* x0, long long* x1) {
  const long long lo = i0 <= 0 ? -OCP_UNBOUNDED : (i0 << OCP_Q_BITS);
  const long long hi = i1 >= size ? OCP_UNBOUNDED : (i1 << OCP_Q_BITS);
  ocp_linear_span(a, base, lo, hi, n, x0, x1);
}
