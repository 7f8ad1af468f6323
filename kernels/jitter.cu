// Image jitter of the pasted crops, bit-exact with ocp_dali.photometric.jitter_image (the seed's mmcv steps: colour
// rounded, brightness / contrast / sharpness truncated), in three launches per batch:
//   1. ocp_jitter_colour_brightness: colour then brightness (pointwise), and each crop's sum of grey (atomics);
//   2. ocp_jitter_contrast: blend with the crop's mean grey, rounded half to even (pointwise, in place);
//   3. ocp_jitter_sharpness: blend with the 3x3 SMOOTH filter over every pixel, the border through reflected
//      neighbours (OpenCV's BORDER_REFLECT_101, as cv2.filter2D in the seed).
// Grid: y strides over the batch's pastes (non-jittered ones return at once), x strides over the crop's pixels.
// Buffers: buf_a / buf_b hold every jittered crop, (crop_h, crop_w, 3) uint8 at OcpPaste.jit_off.
// The per-pixel arithmetic is photometric.cuh's, shared with the compiled CPU loop (geometry_cpu.cpp, cpu_jitter).
#include "ocp_common.cuh"

extern "C" __global__ void ocp_jitter_colour_brightness(const OcpPaste* __restrict__ pastes, long long num_pastes,
                                                        unsigned char* __restrict__ buf_a,
                                                        unsigned long long* __restrict__ grey_sum) {
  __shared__ long long sbuf[OCP_BLOCK];
  for (long long q = blockIdx.y; q < num_pastes; q += gridDim.y) {
    const OcpPaste P = pastes[q];
    if (!P.jitter) continue;  // block-uniform
    const unsigned char* src = reinterpret_cast<const unsigned char*>(P.src_img);
    const long long n = P.crop_h * P.crop_w;
    long long acc = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
      const long long y = i / P.crop_w, x = i % P.crop_w;
      // colour: degenerate = grey, rounded; brightness: degenerate = 0, truncated (photometric.cuh)
      acc += ocp_jitter_colour_brightness_pixel(src + (y * P.src_pitch + x) * 3, buf_a + P.jit_off + i * 3,
                                                P.j_colour, P.j_bright);
    }
    const long long total = ocp_block_sum(acc, sbuf);
    if (threadIdx.x == 0 && total != 0) atomicAdd(grey_sum + q, (unsigned long long)total);
  }
}

extern "C" __global__ void ocp_jitter_contrast(const OcpPaste* __restrict__ pastes, long long num_pastes,
                                               unsigned char* __restrict__ buf_a,
                                               const unsigned long long* __restrict__ grey_sum) {
  for (long long q = blockIdx.y; q < num_pastes; q += gridDim.y) {
    const OcpPaste P = pastes[q];
    if (!P.jitter) continue;
    const long long n = P.crop_h * P.crop_w;
    const long long mean = ocp_round_half_even_div((long long)grey_sum[q], n);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
      unsigned char* px = buf_a + P.jit_off + i * 3;
      for (int c = 0; c < 3; ++c) px[c] = (unsigned char)ocp_blend_floor(mean, px[c], P.j_contrast);
    }
  }
}

extern "C" __global__ void ocp_jitter_sharpness(const OcpPaste* __restrict__ pastes, long long num_pastes,
                                                const unsigned char* __restrict__ buf_a,
                                                unsigned char* __restrict__ buf_b) {
  for (long long q = blockIdx.y; q < num_pastes; q += gridDim.y) {
    const OcpPaste P = pastes[q];
    if (!P.jitter) continue;
    const long long h = P.crop_h, w = P.crop_w, n = h * w;
    const unsigned char* a = buf_a + P.jit_off;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
      const long long y = i / w, x = i % w;
      long long rows[3], cols[3];  // reflected neighbour rows / columns (the seed filters the border too)
      for (int d = 0; d < 3; ++d) {
        rows[d] = ocp_reflect101(y + d - 1, h);
        cols[d] = ocp_reflect101(x + d - 1, w);
      }
      for (int c = 0; c < 3; ++c) {
        const long long v = a[i * 3 + c];
        long long s = 4 * v;  // centre weight 5 = 1 (in the 3x3 sum) + 4
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx) s += a[(rows[dy] * w + cols[dx]) * 3 + c];
        buf_b[P.jit_off + i * 3 + c] = ocp_jitter_sharp_value(s, v, P.j_sharp);
      }
    }
  }
}
