// Per-pixel colour arithmetic of OC&P, written once for every backend: the image jitter (ocp_dali/photometric.py:
// the seed's mmcv / cv2 steps, evaluated exactly) and the feathered composite (reference.composite). Used by the
// CUDA kernels (kernels/jitter.cu, kernels/composite.cu, through ocp_common.cuh), the host emulator
// (kernels/emulate.h) and the compiled CPU loops (kernels/geometry_cpu.cpp: cpu_jitter, cpu_composite).
//
// Each step is a blend (degenerate * (10 - n) + img * n) / 10 with the factor n in tenths, evaluated exactly and
// then rounded as the seed's OpenCV call does: colour rounded half to even (uint8 addWeighted), brightness /
// contrast / sharpness floored after clipping (float32 addWeighted, then astype(uint8)).
// Every function is __host__ __device__ and needs no system header; the including files provide the qualifiers
// (as for geometry.cuh).
#pragma once

#include "geometry.cuh"

// photometric.grey: OpenCV's uint8 BGR2GRAY, (9798 R + 19235 G + 3735 B + 2**14) >> 15 (non-negative operands).
__host__ __device__ __forceinline__ long long ocp_grey(long long r, long long g, long long b) {
  return (r * 9798 + g * 19235 + b * 3735 + 16384) >> 15;
}

// The exact numerator of a blend of img with its degenerate deg, factor n in tenths: the blend is this / 10.
__host__ __device__ __forceinline__ long long ocp_blend_numerator(long long deg, long long img, long long n) {
  return deg * (10 - n) + img * n;
}

// A floored blend from its numerator v: clip(floor(v / 10), 0, 255).
__host__ __device__ __forceinline__ long long ocp_tenths_floor(long long v) {
  return ocp_clamp(ocp_floordiv(v, 10), 0, 255);
}

// A blend rounded half to even from its numerator v: clip(round(v / 10), 0, 255), ties to even.
__host__ __device__ __forceinline__ long long ocp_tenths_round_even(long long v) {
  const long long q = ocp_floordiv(v, 10), r = v - 10 * q;
  return ocp_clamp(q + ((r > 5 || (r == 5 && (q & 1))) ? 1 : 0), 0, 255);
}

// photometric.blend_floor: clip(floor((deg * (10 - n) + img * n) / 10), 0, 255), the seed's float32 addWeighted
// then astype(uint8) (brightness, contrast, sharpness).
__host__ __device__ __forceinline__ long long ocp_blend_floor(long long deg, long long img, long long n) {
  return ocp_tenths_floor(ocp_blend_numerator(deg, img, n));
}

// photometric.blend_round_even: the same blend rounded half to even, the seed's uint8 addWeighted (colour).
__host__ __device__ __forceinline__ long long ocp_blend_round_even(long long deg, long long img, long long n) {
  return ocp_tenths_round_even(ocp_blend_numerator(deg, img, n));
}

// photometric.round_half_even_div: round(total / count), ties to even (the seed's contrast mean); total >= 0.
__host__ __device__ __forceinline__ long long ocp_round_half_even_div(long long total, long long count) {
  count = ocp_max(count, 1);
  const long long q = total / count, r = total - q * count;
  return q + ((2 * r > count || (2 * r == count && (q & 1))) ? 1 : 0);
}

// photometric.reflect101: index i in [-1, n] into [0, n) as OpenCV's BORDER_REFLECT_101 (n == 1: 0).
__host__ __device__ __forceinline__ long long ocp_reflect101(long long i, long long n) {
  if (n == 1) return 0;
  return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
}

// Colour then brightness of one channel value c of a pixel whose grey is grey: colour blends with the grey,
// rounded; brightness with black, floored. The colour blend's value depends on its numerator only, so the compiled
// CPU loop tabulates it per numerator (ocp_jitter_colour_brightness_of).
__host__ __device__ __forceinline__ long long ocp_jitter_colour_brightness_of(long long colour_numerator,
                                                                              long long n_bright) {
  return ocp_blend_floor(0, ocp_tenths_round_even(colour_numerator), n_bright);
}

// Colour then brightness of one RGB pixel (in[0..2] -> out[0..2]). Returns the grey of the result (its share of the
// crop's mean, for contrast).
__host__ __device__ __forceinline__ long long ocp_jitter_colour_brightness_pixel(const unsigned char* in,
                                                                                 unsigned char* out,
                                                                                 long long n_colour,
                                                                                 long long n_bright) {
  const long long grey = ocp_grey(in[0], in[1], in[2]);
  const long long c0 = ocp_jitter_colour_brightness_of(ocp_blend_numerator(grey, in[0], n_colour), n_bright);
  const long long c1 = ocp_jitter_colour_brightness_of(ocp_blend_numerator(grey, in[1], n_colour), n_bright);
  const long long c2 = ocp_jitter_colour_brightness_of(ocp_blend_numerator(grey, in[2], n_colour), n_bright);
  out[0] = (unsigned char)c0;
  out[1] = (unsigned char)c1;
  out[2] = (unsigned char)c2;
  return ocp_grey(c0, c1, c2);
}

// The SMOOTH filter [[1,1,1],[1,5,1],[1,1,1]] / 13 at a pixel from its integer sum s (4 v + the 3x3
// neighbourhood's sum, border neighbours reflected: ocp_reflect101), rounded: (s + 6) / 13 (s / 13 is never half
// an integer; s >= 0).
__host__ __device__ __forceinline__ long long ocp_smooth13(long long s) { return (s + 6) / 13; }

// Sharpness of one channel value v with filter sum s: the blend with the SMOOTH filter, floored.
__host__ __device__ __forceinline__ unsigned char ocp_jitter_sharp_value(long long s, long long v, long long n_sharp) {
  return (unsigned char)ocp_tenths_floor(ocp_blend_numerator(ocp_smooth13(s), v, n_sharp));
}

// ---- composite ----

// reference.composite's feathered mix of a pasted value p over the current value cur, alpha a in Q12 ([0, 4096]),
// rounded half up: (p * a + cur * (4096 - a) + 2048) >> 12 (non-negative).
__host__ __device__ __forceinline__ long long ocp_alpha_mix(long long p, long long cur, long long a) {
  return (p * a + cur * (4096 - a) + 2048) >> 12;
}
